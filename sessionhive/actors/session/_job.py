"""A session's jobs: a queued turn, compaction or clear, the running one, how a turn ends and reports.

:class:`Job` is one accepted piece of work and who waits for it, :class:`Running`
the job that runs now, :class:`JobFinished` the message its coroutine sends back
to the session's mailbox, and :func:`as_turn_outcome` what a turn that raised
leaves in the history; :func:`llm_metrics_hook` records its model calls.
:class:`~sessionhive.actors.session._jobs.Jobs` queues,
starts and finishes them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sessionhive.actors.turn import TurnHandle
from sessionhive.agent import recovery
from sessionhive.agent.loop import TurnOutcome
from sessionhive.metrics import tracing
from sessionhive.model.content import ContentPart
from sessionhive.model.events import AgentEvent
from sessionhive.model.messages import Message, Usage
from sessionhive.model.output import OutputSpec
from sessionhive.model.runs import Webhook

if TYPE_CHECKING:
    from collections.abc import Callable

    from sessionhive._channels import EventSink
    from sessionhive.llm import LlmClient
    from sessionhive.metrics.registry import HiveMetrics
    from sessionhive.runtime import Reply

__all__ = ["Fanout", "Job", "JobFinished", "Running", "as_turn_outcome", "llm_metrics_hook"]


class Fanout:
    """The sinks of one run: its own caller's stream and the readers that joined it later."""

    __slots__ = ("sinks",)

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = list(sinks)

    def offer(self, event: AgentEvent) -> None:
        for sink in self.sinks:
            sink.offer(event)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


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
    # The caller's trace context (the turn's span is its child), or the traceparent of
    # the interrupted turn a resumed one continues (its span links to it).
    trace_parent: Any = None
    trace_link: str | None = None
    # The turn's run, and who else waits for it: callers that sent its idempotency
    # key again (its result) and wait_run (the finished run).
    run_id: str | None = None
    webhook: Webhook | None = None  # in memory only: its secret is never stored
    output: OutputSpec | None = None  # output_schema=: the journal keeps its JSON Schema
    accepted_ack: concurrent.futures.Future[None] | None = None
    followers: list[Reply] = field(default_factory=list)
    run_waiters: list[Reply] = field(default_factory=list)
    parts: tuple[ContentPart, ...] = ()  # the prompt's content parts; ``prompt`` is their text

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
    trace: tracing.TurnTrace | None = None
    rollback: bool = False  # cancelled by on_busy="rollback": its messages leave the history


@dataclass(frozen=True, slots=True)
class JobFinished:
    turn_id: int
    outcome: object  # TurnOutcome | CompactionOutcome | BaseException


def as_turn_outcome(job: Job, outcome: object, journal: tuple[Message, ...]) -> TurnOutcome:
    """A turn's outcome; a turn that raised (anything, SystemExit included) keeps what it journaled.

    The journaled steps are stored already, so they stay (the history only
    ever grows by appending); every tool call left open gets a result
    saying the turn ended, so the history stays valid for any provider.
    """
    if isinstance(outcome, TurnOutcome):
        return outcome
    kept = list(journal) if journal else [Message.user(job.prompt, job.parts)]
    status: Literal["error", "cancelled"]
    if isinstance(outcome, asyncio.CancelledError):
        status, error, reason = "cancelled", "", "cancelled before this tool call finished"
    else:
        assert isinstance(outcome, BaseException)
        error = f"{type(outcome).__name__}: {outcome}"
        status, reason = "error", f"the turn failed before this tool call finished ({error})"
    kept.extend(Message.tool(call.id, reason, is_error=True) for call in recovery.unfinished_calls(kept))
    return TurnOutcome(new_messages=kept, status=status, error=error, error_kind="error" if error else "")


def llm_metrics_hook(
    metrics: HiveMetrics, llm: LlmClient
) -> Callable[[str, str, float, Usage | None], None] | None:
    """What records a turn's LLM calls in ``metrics``, unless the client records its own."""
    if getattr(llm, "records_metrics", False):
        return None
    provider = llm.provider

    def on_llm_call(outcome: str, model: str, seconds: float, usage: Usage | None) -> None:
        duration = metrics.child(metrics.llm_request_duration, provider, model, outcome)
        duration.observe(seconds, tracing.exemplar())
        if usage is not None:
            metrics.child(metrics.llm_tokens, provider, model, "prompt").inc(usage.prompt_tokens)
            metrics.child(metrics.llm_tokens, provider, model, "completion").inc(usage.completion_tokens)

    return on_llm_call
