"""The agent loop: one turn of LLM <-> tools, with human confirmation of tool calls.

:func:`run_turn` works on an immutable copy of the session's history and
returns the messages the turn adds; it never touches session state. It talks
back to its session only through :class:`TurnHooks` (events and confirmation
requests) and the callbacks of its :class:`TurnSpec`, so the session's
mailbox stays free while the turn runs.

The turn journal: ``TurnSpec.on_round`` is handed a :class:`TurnJournal`
each time the turn's messages grow (the prompt, each model answer, each tool
result) and once more just before a tool starts to run; when it returns an
awaitable the loop waits for it (a commit) before going on, so a tool never
runs before the journal says it may have. :func:`resume_turn` continues a
turn from what the journal stored, without repeating a completed model call
or a tool whose result is stored.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sessionhive.agent import compaction
from sessionhive.agent.spending import Spending, call_within_budget
from sessionhive.agent.tasks import TASK_TOOL, TASK_TOOL_NAME, TaskRunner, run_task_call
from sessionhive.llm.base import LlmClient, LlmRequest, LlmResponse
from sessionhive.metrics import tracing
from sessionhive.model.config import ConfirmationPolicy
from sessionhive.model.content import ContentPart
from sessionhive.model.errors import LlmError
from sessionhive.model.events import AgentEvent, TextDelta, ToolEnd, ToolStart
from sessionhive.model.messages import (
    AgentResult,
    Message,
    ToolCall,
    ToolDefinition,
    ToolResult,
    Usage,
)
from sessionhive.model.output import OutputSpec, repair_prompt
from sessionhive.model.permissions import PermissionPolicy
from sessionhive.tools.files import read_workspace_parts

__all__ = [
    "CompactionOutcome",
    "Decision",
    "TurnHooks",
    "TurnJournal",
    "TurnOutcome",
    "TurnSpec",
    "resume_turn",
    "run_compaction",
    "run_turn",
]

DecisionOutcome = Literal["approved", "rejected", "timed_out", "cancelled"]


@dataclass(frozen=True)
class Decision:
    """How a confirmation was resolved."""

    approved: bool
    outcome: DecisionOutcome
    reason: str | None = None
    decided_by: str | None = None  # the named token that answered, when served with named tokens


class ToolRunner(Protocol):
    def definitions(self) -> list[ToolDefinition]: ...

    async def execute(
        self,
        name: str,
        arguments: dict[str, Any] | str,
        *,
        workspace: str | Path | None = None,
        session_id: str = "",
        allow_network: bool = False,
    ) -> ToolResult: ...


class TurnHooks(Protocol):
    """The turn's line back to its session."""

    def emit(self, event: AgentEvent) -> None:
        """Deliver an event (never blocks)."""

    def confirm(self, call: ToolCall, arguments: dict[str, Any], timeout_s: float) -> Awaitable[Decision]:
        """Ask the session for a human decision about ``call``."""


@dataclass(frozen=True)
class TurnJournal:
    """One journal entry of a running turn: what to store so that a crash loses at most one step.

    ``messages`` are the turn's messages so far, prompt first (each entry's
    are a prefix of the next one's and of the turn's final
    ``new_messages``); the session stores them appended to its history.
    ``running_call`` is the id of a tool call that is about to run (its
    result is not in ``messages``): store it as
    :attr:`~sessionhive.model.messages.RunningTurn.running_call`.
    """

    messages: tuple[Message, ...]
    running_call: str | None = None


@dataclass(frozen=True)
class TurnSpec:
    """Everything a turn needs, copied from the session when it starts."""

    session_id: str
    prompt: str
    history: tuple[Message, ...]
    system: str | None
    llm: LlmClient
    tools: ToolRunner
    workspace: Path
    confirmation_policy: ConfirmationPolicy
    permission_policy: PermissionPolicy | None
    max_tool_rounds: int = 50
    thinking: bool = False
    budget: int | None = None
    stream: bool = False
    on_llm_call: Callable[[str, str, float, Usage | None], None] | None = None
    on_tool_call: Callable[[str, str], None] | None = None
    #: ``SessionConfig.allow_network``: may sandboxed ``bash`` reach the network.
    allow_network: bool = False
    #: ``SessionConfig.mcp_servers``: the MCP servers whose tools this session sees (None: all).
    mcp_servers: Sequence[str] | None = None
    #: The turn journal (see the module docstring): called with each :class:`TurnJournal`;
    #: an awaitable it returns (e.g. resolved when the entry committed) is awaited.
    on_round: Callable[[TurnJournal], Awaitable[None] | None] | None = None
    #: A number no earlier turn of the session started with (the session passes its version,
    #: which every turn's end raises). Tool calls the model leaves without an id are named
    #: ``call_<turn_key>_<position in the turn>``: unique in the session's whole history, so
    #: a late answer meant for an earlier turn's call never fits a call of this one.
    turn_key: int = 0
    #: The prompt's content parts (empty for a text prompt; ``prompt`` is then their text).
    prompt_parts: tuple[ContentPart, ...] = ()
    #: The budgets this turn's model calls count against, and where their cost is reported.
    spending: Spending | None = None
    #: ``SessionConfig.task_tool``: runs the built-in ``task`` tool's calls (None: not offered).
    task: TaskRunner | None = None
    #: ``generate(..., output_schema=...)``: the schema the final answer must match.
    output: OutputSpec | None = None


@dataclass
class TurnOutcome:
    """What a finished turn hands back to its session.

    ``new_messages`` always leave the history valid: the prompt is kept and
    every tool call has a result, whatever ended the turn. ``stop_reason`` is
    :attr:`AgentResult.stop_reason`: the last model answer's reason
    (``"stop"``, ``"length"``...) or ``"max_rounds"``, ``"cancelled"``,
    ``"error"``.
    """

    new_messages: list[Message] = field(default_factory=list)
    usage: Usage = Usage()
    last_usage: Usage | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    rounds: int = 0
    text: str = ""
    status: Literal["ok", "error", "cancelled"] = "ok"
    error: str = ""
    error_kind: str = ""
    stop_reason: str = "stop"
    #: The tool call running right now (set while its tool runs): if the turn
    #: ends meanwhile, its effects may have happened and the history says so.
    running_call: str | None = None
    #: The validated structured output (``TurnSpec.output``), and whether its repair round was used.
    output: Any = None
    repaired: bool = False

    def result(self, history: tuple[Message, ...]) -> AgentResult:
        return AgentResult(
            text=self.text,
            messages=list(history),
            usage=self.usage,
            tool_calls=list(self.tool_calls),
            rounds=self.rounds,
            stop_reason=self.stop_reason,
            output=self.output,
        )


async def _traced_call_llm(spec: TurnSpec, request: LlmRequest, hooks: TurnHooks) -> LlmResponse:
    """One model call inside its ``chat {model}`` span."""
    return await tracing.traced_chat(spec.llm, request, _call_llm(spec, request, hooks))


async def _call_llm(spec: TurnSpec, request: LlmRequest, hooks: TurnHooks) -> LlmResponse:
    started = time.perf_counter()
    outcome = "error"
    response: LlmResponse | None = None
    try:
        if spec.stream:
            session_id = spec.session_id

            def on_text(delta: str) -> None:
                if delta:
                    hooks.emit(TextDelta(session_id, delta))

            response = await spec.llm.stream(request, on_text)
        else:
            response = await spec.llm.complete(request)
        outcome = "ok"
        return response
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        if spec.on_llm_call is not None:
            spec.on_llm_call(
                outcome, spec.llm.model, time.perf_counter() - started, response.usage if response else None
            )


def _close_open_calls(messages: list[Message], reason: str, running_call: str | None = None) -> None:
    """Give every tool call of the last assistant message a result, so the history stays valid.

    ``running_call``, whose tool was running when the turn ended, gets one
    saying its effects are unknown instead: it did start.
    """
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    for message in reversed(messages):
        if message.role == "assistant":
            for call in message.tool_calls:
                if call.id == running_call:
                    messages.append(Message.tool(call.id, ENDED_WHILE_RUNNING, is_error=True))
                elif call.id not in answered:
                    messages.append(Message.tool(call.id, reason, is_error=True))
            return


class _ConfirmationCancelled(asyncio.CancelledError):
    """The session cancelled a pending confirmation (cancel_operation, stop): the turn is cancelled.

    Raised by the loop itself, possibly before the task's own cancellation
    arrives, so it is told apart from a CancelledError that a model client
    or a tool raises without anyone cancelling.
    """


async def _journal(spec: TurnSpec, messages: list[Message], running_call: str | None = None) -> None:
    if spec.on_round is not None:
        waiting = spec.on_round(TurnJournal(tuple(messages), running_call))
        if waiting is not None:
            await waiting


async def _execute(spec: TurnSpec, call: ToolCall, arguments: dict[str, Any], hooks: TurnHooks) -> ToolResult:
    """Run an approved call: the built-in ``task`` by the turn's runner, any other tool by the executor."""
    if spec.task is not None and call.name == TASK_TOOL_NAME:
        return await run_task_call(spec.task, call.id, arguments, hooks.emit)
    return await spec.tools.execute(
        call.name,
        arguments,
        workspace=spec.workspace,
        session_id=spec.session_id,
        allow_network=spec.allow_network,
    )


async def _run_tool(
    spec: TurnSpec, call: ToolCall, hooks: TurnHooks, out: TurnOutcome | None = None
) -> ToolResult:
    """Decide on ``call`` (policy, then a human if needed) and run it if approved.

    ``messages`` (the turn's so far) are journaled with ``running_call`` just
    before the tool starts.
    """
    sid = spec.session_id
    try:
        arguments = call.decoded_arguments()
    except ValueError as exc:
        result = ToolResult(
            f"error: {exc}. Call {call.name} again with a JSON object of arguments.", is_error=True
        )
        hooks.emit(ToolStart(sid, call.id, call.name, call.arguments))
        hooks.emit(ToolEnd(sid, call.id, call.name, result.output, True))
        if spec.on_tool_call:
            spec.on_tool_call(call.name, "invalid_arguments")
        return result

    decision = spec.permission_policy.decide(call.name, arguments) if spec.permission_policy else None
    if not _offered(spec, call.name):
        # The model named a tool of an MCP server this session was not given: say that, not "policy".
        result = ToolResult(
            f"error: this session denies {call.name}: its MCP server is not in mcp_servers", True
        )
        outcome = "denied"
    elif decision == "deny":
        result = ToolResult(f"error: the permission policy denies {call.name} with these arguments", True)
        outcome = "denied"
    else:
        needs_human = decision == "ask" or (decision is None and spec.confirmation_policy.requires(call.name))
        verdict = (
            await tracing.traced_confirmation(
                call, hooks.confirm(call, arguments, spec.confirmation_policy.timeout_s)
            )
            if needs_human
            else Decision(True, "approved")
        )
        if verdict.outcome == "cancelled":
            raise _ConfirmationCancelled("confirmation cancelled")
        if verdict.approved:
            if out is not None:
                await _journal(spec, out.new_messages, running_call=call.id)
                out.running_call = call.id
            hooks.emit(ToolStart(sid, call.id, call.name, arguments))
            result = await _execute(spec, call, arguments, hooks)
            if out is not None:
                out.running_call = None
            hooks.emit(ToolEnd(sid, call.id, call.name, result.output, result.is_error))
            if spec.on_tool_call:
                spec.on_tool_call(call.name, "error" if result.is_error else "ok")
            return result
        why = f": {verdict.reason}" if verdict.reason else ""
        if verdict.outcome == "timed_out":
            waited = spec.confirmation_policy.timeout_s
            text = f"error: no confirmation within {waited:g}s; the call was rejected"
        else:
            text = f"error: the user rejected this {call.name} call{why}"
        result = ToolResult(text, True)
        outcome = verdict.outcome
    hooks.emit(ToolEnd(sid, call.id, call.name, result.output, True))
    if spec.on_tool_call:
        spec.on_tool_call(call.name, outcome)
    return result


async def run_turn(spec: TurnSpec, hooks: TurnHooks) -> TurnOutcome:
    """Run one turn to its end; cancellation ends it with a valid partial history."""
    parts = spec.prompt_parts
    if parts:  # a workspace file is read now, once: the stored message holds its bytes
        parts = await asyncio.to_thread(read_workspace_parts, spec.workspace, parts)
    out = TurnOutcome(new_messages=[Message.user(spec.prompt, parts)])
    return await _drive(spec, hooks, out, None)


# What a resumed turn gives a tool call that was running when the process stopped: it is
# not run again (it may have had its effects), and the model learns why.
#: The result of a call whose tool was running when its turn was cancelled or failed.
ENDED_WHILE_RUNNING = (
    "error: the turn ended while this tool call ran; it was stopped and its effects are unknown. "
    "Check whether it took effect before calling it again."
)
INTERRUPTED_WHILE_RUNNING = (
    "error: the process stopped while this tool call ran; its effects are unknown. "
    "Check whether it took effect before calling it again."
)


@dataclass(frozen=True)
class _Resume:
    unanswered: tuple[ToolCall, ...]
    running_call: str | None


async def resume_turn(
    spec: TurnSpec, hooks: TurnHooks, journaled: tuple[Message, ...], running_call: str | None = None
) -> TurnOutcome:
    """Continue a turn a stopped process left in the journal, as :func:`run_turn` would have.

    ``spec.history`` is the history before the turn and ``journaled`` the
    turn's stored messages (prompt first: ``messages[first_message:]`` of the
    snapshot, see :class:`~sessionhive.model.messages.RunningTurn`);
    ``running_call`` is the journal's running call. No stored model answer is
    asked for again and no tool call with a stored result runs again. Tool
    calls of the last answer without a result run now, in order, asking a
    human again when the policy says so; except ``running_call``, which may
    have had its effects: it gets :data:`INTERRUPTED_WHILE_RUNNING` as its
    result. Then the loop goes on. A journal that already ends with a final
    answer returns at once. The outcome's ``new_messages`` start with
    ``journaled``; ``rounds`` and ``tool_calls`` count the journaled ones
    too (their token usage is unknown and not counted).
    """
    if not journaled or journaled[0].role != "user":
        raise ValueError("a journaled turn starts with its prompt (a user message)")
    out = TurnOutcome(new_messages=list(journaled))
    for message in journaled:
        if message.role == "assistant":
            out.rounds += 1
            out.tool_calls.extend(message.tool_calls)
            out.text = message.text
    answered = {m.tool_call_id for m in journaled if m.role == "tool"}
    last_answer = next((m for m in reversed(journaled) if m.role == "assistant"), None)
    unanswered = tuple(c for c in (last_answer.tool_calls if last_answer else ()) if c.id not in answered)
    # A user message after the prompt is the structured output's repair request: it was used.
    out.repaired = any(m.role == "user" for m in journaled[1:])
    # The turn had its final answer and only clearing the record was lost; a structured one is checked.
    final = journaled[-1].role == "assistant" and not journaled[-1].tool_calls
    if final and (spec.output is None or await _output_settled(spec, spec.output, out)):
        return out
    return await _drive(spec, hooks, out, _Resume(unanswered, running_call))


async def _answer_calls(
    spec: TurnSpec, hooks: TurnHooks, out: TurnOutcome, calls: tuple[ToolCall, ...], running_call: str | None
) -> None:
    for call in calls:
        if call.id == running_call:
            result = ToolResult(INTERRUPTED_WHILE_RUNNING, True)
        else:
            result = await tracing.traced_tool(call, spec.tools, _run_tool(spec, call, hooks, out))
        out.new_messages.append(
            Message.tool(call.id, result.output, is_error=result.is_error, parts=result.parts)
        )
        await _journal(spec, out.new_messages)


def _offered(spec: TurnSpec, tool_name: str) -> bool:
    """Whether the session may see ``tool_name``: an MCP tool only of the servers it names."""
    if spec.mcp_servers is None:
        return True
    hub = getattr(spec.tools, "mcp", None)
    if hub is None or not hub.owns(tool_name):
        return True
    return tool_name.partition("__")[0] in spec.mcp_servers


async def _drive(spec: TurnSpec, hooks: TurnHooks, out: TurnOutcome, resume: _Resume | None) -> TurnOutcome:
    """The loop of model calls and tool calls, from ``out`` on, until a final answer or an error."""
    prepare = getattr(spec.tools, "prepare", None)
    if prepare is not None:
        await prepare()  # MCP servers open on first use and refresh a changed tool list here
    tool_defs = tuple(d for d in spec.tools.definitions() if _offered(spec, d.name))
    if spec.task is not None:  # the built-in task tool takes the name from any other tool
        tool_defs = (*(d for d in tool_defs if d.name != TASK_TOOL_NAME), TASK_TOOL)
    call_seq = len(out.tool_calls)  # positions go on after a resume, past the journaled calls
    try:
        if resume is None:
            await _journal(spec, out.new_messages)
        else:
            await _answer_calls(spec, hooks, out, resume.unanswered, resume.running_call)
        while True:
            if out.rounds >= spec.max_tool_rounds:
                out.status, out.error_kind, out.stop_reason = "error", "max_rounds", "max_rounds"
                out.error = (
                    f"the turn reached max_tool_rounds={spec.max_tool_rounds} LLM calls without a final "
                    "answer; raise SessionConfig.max_tool_rounds or ask for a smaller step"
                )
                return out
            request = LlmRequest(
                session_id=spec.session_id,
                system=spec.system,
                messages=spec.history + tuple(out.new_messages),
                tools=tool_defs,
                thinking=spec.thinking,
                budget=spec.budget,
                output=spec.output,
            )
            response = await call_within_budget(
                spec.spending,
                spec.llm.model,
                request,
                functools.partial(_traced_call_llm, spec, request, hooks),
            )
            if response is None:  # a budget refused the call: nothing was sent, every call is answered
                out.stop_reason = "budget"
                return out
            out.rounds += 1
            out.usage = out.usage + response.usage
            out.last_usage = response.usage
            calls = []
            for call in response.tool_calls:
                call_seq += 1
                # A provider's id is kept as it is: the provider matches results to calls by it.
                unnamed = not call.id
                calls.append(
                    ToolCall(call.name, call.arguments, f"call_{spec.turn_key}_{call_seq}")
                    if unnamed
                    else call
                )
            fallback = response.model if response.model != spec.llm.model else None  # who answered
            out.new_messages.append(Message.assistant(response.text, tuple(calls), fallback))
            out.text = response.text
            await _journal(spec, out.new_messages)
            if not calls:
                # A "tool_calls" stop whose calls were all unusable still ends the turn with an answer.
                out.stop_reason = "stop" if response.stop_reason == "tool_calls" else response.stop_reason
                if spec.output is None or await _output_settled(spec, spec.output, out):
                    return out
                continue
            out.tool_calls.extend(calls)
            await _answer_calls(spec, hooks, out, tuple(calls), None)
    except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - a provider bug must end the turn, not the session
        return _ended_by(out, exc)


async def _output_settled(spec: TurnSpec, schema: OutputSpec, out: TurnOutcome) -> bool:
    """Check the final answer against ``schema``: True when the turn is over (matched, or failed).

    The first mismatch asks the model again with the error (a user message,
    so the history stays a valid conversation); the second fails the turn.
    """
    try:
        out.output = schema.validate(out.text)
        return True
    except ValueError as exc:
        problem = str(exc)
    if out.repaired:
        out.status, out.error_kind, out.stop_reason = "error", "output_invalid", "error"
        out.error = f"the answer does not match output_schema {schema.name!r}, also after a repair: {problem}"
        return True
    out.repaired = True
    out.new_messages.append(Message.user(repair_prompt(problem)))
    await _journal(spec, out.new_messages)
    return False


def _ended_by(out: TurnOutcome, exc: BaseException) -> TurnOutcome:
    """``out`` closed by what ended the turn early: a cancel, a model error, or any other failure.

    Every tool call left open gets a result saying why, so the history stays
    valid for any provider.
    """
    status: Literal["error", "cancelled"] = "error"
    note = "error: the turn failed before this tool call ran"
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        ours = isinstance(exc, _ConfirmationCancelled)  # the session cancelled the call's confirmation
        if ours or task is None or task.cancelling() > 0:
            status, kind, error = "cancelled", "", ""
            note = "error: the turn was cancelled before this tool call ran"
        else:
            # Nobody cancelled this turn: a model client or a tool raised
            # CancelledError of its own (a library's cancel scope leaking
            # out). That is a failure of the turn, not a cancellation.
            kind, error = "error", f"CancelledError raised by the model or a tool without a cancel: {exc}"
            note = f"{note} ({exc!r})"
    elif isinstance(exc, LlmError):
        kind, error = "llm", str(exc)
    else:
        kind, error = "error", f"{type(exc).__name__}: {exc}"
    _close_open_calls(out.new_messages, note, out.running_call)
    out.status, out.error_kind, out.error = status, kind, error
    out.stop_reason = "cancelled" if status == "cancelled" else "error"
    return out


@dataclass(frozen=True)
class CompactionOutcome:
    messages: tuple[Message, ...]
    summarised: bool
    usage: Usage = Usage()


async def run_compaction(
    session_id: str,
    messages: tuple[Message, ...],
    system: str | None,
    llm: LlmClient | None,
    target_tokens: int | None,
    on_llm_call: Callable[[str, str, float, Usage | None], None] | None = None,
) -> CompactionOutcome:
    """Compact ``messages`` by the rules of :mod:`~sessionhive.agent.compaction`, with or without an LLM.

    Nothing changes at or under ``COMPACT_MIN_MESSAGES`` messages. Above,
    old large tool outputs are pruned; if that brings the estimate under
    ``target_tokens`` it is enough. Otherwise the middle (between the first
    ``KEEP_HEAD`` and the last ``KEEP_TAIL`` messages, tool calls kept with
    their results) is replaced by the LLM's summary, or without an LLM by a
    note that it was removed.
    """
    if len(messages) <= compaction.COMPACT_MIN_MESSAGES:
        return CompactionOutcome(messages, False)
    pruned = compaction.prune_tool_outputs(messages)
    if (
        pruned != messages
        and target_tokens is not None
        and compaction.estimate_tokens(pruned, system) <= target_tokens
    ):
        return CompactionOutcome(pruned, False)
    parts = compaction.split_for_summary(pruned)
    if parts is None:
        return CompactionOutcome(pruned, False)
    head, middle, tail = parts
    if llm is None:
        return CompactionOutcome((*head, compaction.omission_note(middle), *tail), False)
    request = LlmRequest(
        session_id=session_id, system=None, messages=compaction.summary_prompt(middle), purpose="compaction"
    )
    started = time.perf_counter()
    try:
        response = await llm.complete(request)
    except BaseException:
        if on_llm_call is not None:
            on_llm_call("error", llm.model, time.perf_counter() - started, None)
        raise
    if on_llm_call is not None:
        on_llm_call("ok", llm.model, time.perf_counter() - started, response.usage)
    summary = Message.user(compaction.SUMMARY_PREFIX + response.text.strip())
    return CompactionOutcome((*head, summary, *tail), True, response.usage)
