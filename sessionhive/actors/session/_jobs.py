"""Jobs and turns: a session runs its turns, compactions and clears one after another.

A job queued behind a running one waits in :attr:`SessionState._jobs`; the
running one is a coroutine on the Hive's turn loop that reports back with
messages (``TurnEvents``, ``ConfirmationAsked``, ``JobFinished``), so the
mailbox keeps answering while a turn runs and a history is never
interleaved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pykka

from sessionhive.actors.messages import Clear, Compact, Generate, Journaled, MaybeAutoCompact
from sessionhive.actors.session._state import SessionState
from sessionhive.actors.turn import SessionTurnHooks, TurnEvents, TurnHandle
from sessionhive.agent import compaction, recovery
from sessionhive.agent.loop import (
    CompactionOutcome,
    TurnJournal,
    TurnOutcome,
    TurnSpec,
    resume_turn,
    run_compaction,
    run_turn,
)
from sessionhive.model.errors import InvalidConfig, LlmError, LlmNotConfigured, Overloaded, TurnFailed
from sessionhive.model.events import (
    AgentEvent,
    ContextCompacted,
    SessionPaused,
    TurnCancelled,
    TurnEnd,
    TurnError,
    TurnInterrupted,
    TurnStart,
)
from sessionhive.model.messages import Message, RunningTurn, Usage

if TYPE_CHECKING:
    from sessionhive._channels import EventSink
    from sessionhive.llm import LlmClient
    from sessionhive.runtime import Reply

__all__ = ["Job", "JobFinished", "JobsPart", "Running"]

log = logging.getLogger("sessionhive.session")


@dataclass
class Job:
    kind: Literal["turn", "resume", "compact", "auto_compact", "clear"]
    reply: Reply | None
    prompt: str = ""
    sink: EventSink | None = None
    queued_at: float = field(default_factory=time.perf_counter)
    # A turn resumed from the journal (kind "resume"): its stored steps.
    journaled: tuple[Message, ...] = ()
    running_call: str | None = None

    @property
    def is_turn(self) -> bool:
        return self.kind in ("turn", "resume")


@dataclass
class Running:
    job: Job
    turn_id: int
    handle: TurnHandle | None
    started: float
    cancelled: bool = False
    cancel_reason: str = "cancelled by cancel_operation()"


@dataclass(frozen=True, slots=True)
class JobFinished:
    turn_id: int
    outcome: object  # TurnOutcome | CompactionOutcome | BaseException


class JobsPart(SessionState):
    """Generate, compact, clear: queueing, starting and finishing jobs."""

    def on_Generate(self, message: Generate) -> None:
        if not isinstance(message.prompt, str):
            raise InvalidConfig("the prompt must be a string")
        if self._state == "paused":
            raise SessionPaused(self.session_id)
        if self._llm() is None:
            raise self._no_llm()
        self._enqueue(Job("turn", message.reply, message.prompt, message.sink))
        self._answer(message.accepted, True)

    def on_Compact(self, message: Compact) -> None:
        self._enqueue(Job("compact", message.reply))

    def on_MaybeAutoCompact(self, message: MaybeAutoCompact) -> None:
        if not self._should_auto_compact():
            self._answer(message.reply, False)
            return
        self._enqueue(Job("auto_compact", message.reply))

    def on_Clear(self, message: Clear) -> None:
        self._enqueue(Job("clear", message.reply))

    def _recover_interrupted_turn(self) -> None:
        """A turn the last process left running (found in the journal): close it, or resume it.

        Closing appends a result for each tool call left open (the one that
        was running: its effects are unknown) and a closing answer, so the
        history is valid for any provider. ``resume_interrupted=True``
        continues the turn instead: no stored model answer is asked again,
        no tool with a stored result runs again.
        """
        running = self._running_turn
        if running is None:
            return
        history, journaled = recovery.journaled_turn(self._messages, running)
        resume = self._config.resume_interrupted and bool(journaled) and self._llm() is not None
        unfinished = [call.id for call in recovery.unfinished_calls(journaled)]
        log.warning(
            "session %s: turn %d was interrupted by a stop of the process; %s",
            self.session_id,
            running.turn_id,
            "resuming it" if resume else "closing it",
        )
        if resume:
            self._messages = history
            self._running_turn = None
            job = Job("resume", None, running.prompt, journaled=journaled, running_call=running.running_call)
            self._unheard = [
                TurnInterrupted(self.session_id, running.turn_id, running.prompt, True, unfinished)
            ]
            self._jobs.append(job)  # started by on_start, once the actor runs
            self._metrics.turn_queue_depth.inc()
            return
        self._messages = self._messages + recovery.close_interrupted(self._messages, running)
        self._running_turn = None
        self._unheard = [TurnInterrupted(self.session_id, running.turn_id, running.prompt, False, unfinished)]
        self._persist()

    def _no_llm(self) -> LlmNotConfigured:
        return LlmNotConfigured(self.session_id, self._llm_problem)

    def _enqueue(self, job: Job) -> None:
        # The queue is bounded like the mailbox: nothing grows without bound.
        if len(self._jobs) >= self._services.mailbox_size:
            self._metrics.child(self._metrics.calls_rejected, "jobs").inc()
            raise Overloaded(self.session_id, self._services.mailbox_size)
        self._jobs.append(job)
        self._metrics.turn_queue_depth.inc()
        self._start_next()

    def _reject(self, job: Job, error: BaseException) -> None:
        if job.sink is not None:
            if isinstance(error, AgentEvent):
                job.sink.offer(error)
            job.sink.close()
        self._refuse(job.reply, error)

    def _reject_queued(self, error: Callable[[], BaseException]) -> bool:
        rejected = False
        while self._jobs:
            job = self._jobs.pop(0)
            self._metrics.turn_queue_depth.dec()
            self._reject(job, error())
            rejected = True
        return rejected

    def _should_auto_compact(self) -> bool:
        return (
            self._config.auto_compact and self._context_usage().percent >= self._config.auto_compact_threshold
        )

    def _start_next(self) -> None:
        while self._running is None and self._jobs and not self._gone:
            job = self._jobs.pop(0)
            self._metrics.turn_queue_depth.dec()
            if job.kind == "clear":
                self._messages = ()
                self._history_epoch += 1
                self._context_used = 0
                self._commit_and_answer(job.reply, None, "clear")
                continue
            if job.kind == "turn" and self._state == "paused":  # a resumed turn finishes regardless
                self._reject(job, SessionPaused(self.session_id))
                continue
            llm = self._llm()
            if job.is_turn and llm is None:  # configure() may have changed since it was queued
                self._reject(job, self._no_llm())
                continue
            self._turn_seq += 1
            running = Running(job, self._turn_seq, None, time.perf_counter())
            self._running = running
            if job.is_turn:
                assert llm is not None
                self._metrics.turns_in_flight.inc()
                self._start_turn(running, llm)
            else:
                self._start_compaction(running, llm)

    def _on_done(self, turn_id: int) -> Callable[[object], None]:
        ref = self.actor_ref

        def on_done(result: object) -> None:
            try:
                ref.tell(JobFinished(turn_id, result))
            except pykka.ActorDeadError:
                pass  # the session was destroyed meanwhile

        return on_done

    def _start_turn(self, running: Running, llm: LlmClient) -> None:
        job = running.job
        loop = self._services.turn_loop
        spec = self._turn_spec(job, llm, running.turn_id)
        self._emit(TurnStart(self.session_id, job.prompt, running.turn_id), job.sink)
        hooks = SessionTurnHooks(self.actor_ref, running.turn_id, loop.loop)
        if job.kind == "resume":
            # The resumed turn journals its steps as a new one does: without the record, a
            # second crash would resume from the first one's journal and run its tools again.
            self._running_turn = RunningTurn(
                running.turn_id, job.prompt, time.time(), len(self._messages), job.running_call
            )
            turn = resume_turn(spec, hooks, job.journaled, job.running_call)
        else:
            self._running_turn = RunningTurn(running.turn_id, job.prompt, time.time(), len(self._messages))
            turn = run_turn(spec, hooks)
        running.handle = loop.submit(turn, self._on_done(running.turn_id))

    def _journal_hook(self, turn_id: int) -> Callable[[TurnJournal], Awaitable[None] | None] | None:
        """What the turn calls after each step: a tell to this actor, and a wait for the step's commit.

        Durable sessions wait before something outside happens: a tool runs
        (the step names its call, so the tool runs at most once) or a human
        is asked (the model's answer that asks is stored, never asked for
        again). Their other steps are committed with the next commit anyone
        waits for (the next tool's, or the turn's end): a step lost in a
        crash only makes the model be asked again for an answer that was
        never stored. Batched sessions wait only while the writer is behind
        (backpressure: the turn goes at the store's pace).
        """
        ref, turns, link = self.actor_ref, self._services.turn_loop, self._services.persistence
        stored, durability = self._stored(), self._config.durability
        permission = self._config.permission_policy

        def acts_outside(journal: TurnJournal) -> bool:
            if journal.running_call is not None:
                return True
            last = journal.messages[-1] if journal.messages else None
            if last is None or not last.tool_calls:
                return False
            return permission is not None or any(self._policy.requires(call.name) for call in last.tool_calls)

        def on_round(journal: TurnJournal) -> Awaitable[None] | None:
            wait = stored and link.waits_for_commit(durability if acts_outside(journal) else "batched")
            ack: concurrent.futures.Future[None] | None = concurrent.futures.Future() if wait else None
            try:
                ref.tell(Journaled(turn_id, journal, ack))
            except pykka.ActorDeadError:
                return None  # the session is gone; the turn is being abandoned
            return None if ack is None else asyncio.wrap_future(ack, loop=turns.loop)

        return on_round

    def on_Journaled(self, message: Journaled) -> None:
        running = self._running
        if running is None or running.turn_id != message.turn_id or self._running_turn is None:
            if message.ack is not None:
                message.ack.set_result(None)  # a late step of a turn that ended: nothing to store
            return
        # Kept even for a session outside the store: a crashed actor's
        # restart (from its in-memory snapshot) recovers the steps too.
        self._journal = message.journal.messages
        self._running_turn = replace(self._running_turn, running_call=message.journal.running_call)
        if self._stored():
            self._version += 1
            self._services.persistence.save(self.session_id, self._snapshot, message.ack)

    def _start_compaction(self, running: Running, llm: LlmClient | None) -> None:
        target = int(self._config.auto_compact_threshold * self._context_usage().max_tokens)
        hook = self._llm_metrics_hook(llm) if llm is not None else None
        compacting = run_compaction(
            self.session_id, self._messages, self._config.system_prompt, llm, target, hook
        )
        running.handle = self._services.turn_loop.submit(compacting, self._on_done(running.turn_id))

    def _llm_metrics_hook(self, llm: LlmClient) -> Callable[[str, str, float, Usage | None], None] | None:
        """What records an LLM call's metrics, unless the client records its own."""
        if getattr(llm, "records_metrics", False):
            return None
        metrics = self._metrics
        provider = llm.provider

        def on_llm_call(outcome: str, model: str, seconds: float, usage: Usage | None) -> None:
            metrics.child(metrics.llm_request_duration, provider, model, outcome).observe(seconds)
            if usage is not None:
                metrics.child(metrics.llm_tokens, provider, model, "prompt").inc(usage.prompt_tokens)
                metrics.child(metrics.llm_tokens, provider, model, "completion").inc(usage.completion_tokens)

        return on_llm_call

    def _turn_spec(self, job: Job, llm: LlmClient, turn_id: int) -> TurnSpec:
        metrics = self._metrics

        def on_tool_call(tool: str, outcome: str) -> None:
            metrics.child(metrics.tool_calls, tool, outcome).inc()

        workspace = Path(self._config.workspace) if self._config.workspace else self._services.workspace
        return TurnSpec(
            session_id=self.session_id,
            prompt=job.prompt,
            history=self._messages,
            system=self._config.system_prompt,
            llm=llm,
            tools=self._services.tools,
            workspace=workspace,
            confirmation_policy=self._policy,
            permission_policy=self._config.permission_policy,
            max_tool_rounds=self._config.max_tool_rounds,
            thinking=self._thinking,
            budget=self._budget,
            stream=self._listened(job.sink),
            on_llm_call=self._llm_metrics_hook(llm),
            on_tool_call=on_tool_call,
            allow_network=self._config.allow_network,
            on_round=self._journal_hook(turn_id),
            turn_key=self._version,  # grows with every turn's end: names unnamed tool calls uniquely
        )

    def _finish_running(self) -> Running | None:
        running, self._running = self._running, None
        if running is not None and running.job.is_turn:
            self._metrics.turns_in_flight.dec()
        return running

    def _count_turn(self, running: Running, outcome: str) -> None:
        if not running.job.is_turn:
            return
        metrics = self._metrics
        metrics.child(metrics.turns, outcome).inc()
        metrics.child(metrics.turn_duration, outcome).observe(time.perf_counter() - running.started)

    def _abandon(self, running: Running, error: BaseException, outcome: str) -> None:
        """End the running job without its result (destroy, crash, stop): count it and tell its caller."""
        if running.handle is not None:
            running.handle.cancel()
        self._count_turn(running, outcome)
        self._reject(running.job, error)

    def on_TurnEvents(self, message: TurnEvents) -> None:
        running = self._running
        if running is None or running.turn_id != message.turn_id:
            return  # late events of a turn that already ended
        sink = running.job.sink
        for event in message.events:
            self._emit(event, sink)

    def on_JobFinished(self, message: JobFinished) -> None:
        running = self._running
        if running is None or running.turn_id != message.turn_id:
            return
        self._finish_running()
        for tool_id, (turn_id, resolve) in list(self._pending.items()):
            if turn_id == message.turn_id:  # only if the turn crashed while it waited
                del self._pending[tool_id]
                from sessionhive.agent.loop import Decision

                self._settle(tool_id, resolve, Decision(False, "cancelled", "the turn ended"))
        job, outcome = running.job, message.outcome
        if job.is_turn:
            self._finish_turn(running, _as_turn_outcome(job, outcome, self._journal or job.journaled))
        else:
            self._finish_compaction(running, outcome)
        if self._gone == "stopped":
            self._stop_now()
            return
        self._start_next()

    def _finish_turn(self, running: Running, outcome: TurnOutcome) -> None:
        job = running.job
        new_messages = tuple(outcome.new_messages)
        self._messages = self._messages + new_messages
        self._running_turn = None  # the turn's messages are history now: the journal is done
        self._journal = ()
        self._usage = self._usage + outcome.usage
        if outcome.last_usage is not None:
            self._context_used = outcome.last_usage.total_tokens
        self._count_turn(
            running, {"ok": "completed", "error": "error", "cancelled": "cancelled"}[outcome.status]
        )
        if self._should_auto_compact() and outcome.status == "ok":
            # Compaction happens before the next queued turn sees the history.
            self._jobs.insert(0, Job("auto_compact", None))
            self._metrics.turn_queue_depth.inc()
        event: AgentEvent
        value: object
        if outcome.status == "ok":
            # The result carries the turn's own messages, not the whole history.
            result = outcome.result(new_messages)
            event = TurnEnd(self.session_id, result)
            value = result
        elif outcome.status == "cancelled":
            event = TurnCancelled(self.session_id, running.cancel_reason)
            value = event
        else:
            event = TurnError(self.session_id, outcome.error, outcome.error_kind)
            failure = (
                LlmError(f"session {self.session_id!r}: {outcome.error}")
                if outcome.error_kind == "llm"
                else TurnFailed(f"session {self.session_id!r}: {outcome.error}")
            )
            failure.event = event
            value = failure
        ack = self._persist()
        self._emit(event, job.sink)
        if job.sink is not None:
            job.sink.close()
        self._deliver(job.reply, value, ack, "generate")

    def _finish_compaction(self, running: Running, outcome: object) -> None:
        job = running.job
        trigger = "auto" if job.kind == "auto_compact" else "manual"
        if isinstance(outcome, BaseException):
            if isinstance(outcome, asyncio.CancelledError):
                self._refuse(job.reply, TurnCancelled(self.session_id, "compaction cancelled"))
            else:
                log.warning("session %s: compaction failed: %r", self.session_id, outcome)
                self._refuse(
                    job.reply, LlmError(f"session {self.session_id!r}: compaction failed: {outcome}")
                )
            return
        assert isinstance(outcome, CompactionOutcome)
        before = len(self._messages)
        percent = self._context_usage().percent
        value: object = True if job.kind == "auto_compact" else None
        if outcome.messages == self._messages:
            self._answer(job.reply, value)
            return
        self._messages = outcome.messages
        self._history_epoch += 1
        self._context_used = compaction.estimate_tokens(self._messages, self._config.system_prompt)
        self._usage = self._usage + outcome.usage
        self._metrics.child(self._metrics.compactions, trigger).inc()
        self._emit(ContextCompacted(self.session_id, before, len(self._messages), percent, trigger))
        self._commit_and_answer(job.reply, value, "compact")

    def _stop_now(self) -> None:
        raise NotImplementedError


def _as_turn_outcome(job: Job, outcome: object, journal: tuple[Message, ...]) -> TurnOutcome:
    """A turn's outcome; a turn that raised (anything, SystemExit included) keeps what it journaled.

    The journaled steps are stored already, so they stay (the history only
    ever grows by appending); every tool call left open gets a result
    saying the turn ended, so the history stays valid for any provider.
    """
    if isinstance(outcome, TurnOutcome):
        return outcome
    kept = list(journal) if journal else [Message.user(job.prompt)]
    status: Literal["error", "cancelled"]
    if isinstance(outcome, asyncio.CancelledError):
        status, error, reason = "cancelled", "", "cancelled before this tool call finished"
    else:
        assert isinstance(outcome, BaseException)
        error = f"{type(outcome).__name__}: {outcome}"
        status, reason = "error", f"the turn failed before this tool call finished ({error})"
    kept.extend(Message.tool(call.id, reason, is_error=True) for call in recovery.unfinished_calls(kept))
    return TurnOutcome(new_messages=kept, status=status, error=error, error_kind="error" if error else "")
