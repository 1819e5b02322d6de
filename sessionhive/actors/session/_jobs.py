"""Jobs and turns: a session runs its turns, compactions and clears one after another.

A job queued behind a running one waits in :attr:`SessionState._jobs`; the
running one is a coroutine on the Hive's turn loop that reports back with
messages (``TurnEvents``, ``ConfirmationAsked``, ``JobFinished``), so the
mailbox keeps answering while a turn runs and a history is never
interleaved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pykka

from sessionhive.actors.messages import Clear, Compact, Generate, MaybeAutoCompact
from sessionhive.actors.session._state import SessionState
from sessionhive.actors.turn import SessionTurnHooks, TurnEvents, TurnHandle
from sessionhive.agent import compaction
from sessionhive.agent.loop import CompactionOutcome, TurnOutcome, TurnSpec, run_compaction, run_turn
from sessionhive.model.errors import InvalidConfig, LlmError, LlmNotConfigured, Overloaded, TurnFailed
from sessionhive.model.events import (
    AgentEvent,
    ContextCompacted,
    SessionPaused,
    TurnCancelled,
    TurnEnd,
    TurnError,
    TurnStart,
)
from sessionhive.model.messages import Message, Usage

if TYPE_CHECKING:
    from sessionhive._channels import EventSink
    from sessionhive.llm import LlmClient
    from sessionhive.runtime import Reply

__all__ = ["Job", "JobFinished", "JobsPart", "Running"]

log = logging.getLogger("sessionhive.session")


@dataclass
class Job:
    kind: Literal["turn", "compact", "auto_compact", "clear"]
    reply: Reply | None
    prompt: str = ""
    sink: EventSink | None = None
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class Running:
    job: Job
    turn_id: int
    handle: TurnHandle | None
    started: float
    cancelled: bool = False


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
            if job.kind == "turn" and self._state == "paused":
                self._reject(job, SessionPaused(self.session_id))
                continue
            llm = self._llm()
            if job.kind == "turn" and llm is None:  # configure() may have changed since it was queued
                self._reject(job, self._no_llm())
                continue
            self._turn_seq += 1
            running = Running(job, self._turn_seq, None, time.perf_counter())
            self._running = running
            if job.kind == "turn":
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
        spec = self._turn_spec(job, llm)
        self._emit(TurnStart(self.session_id, job.prompt, running.turn_id), job.sink)
        hooks = SessionTurnHooks(self.actor_ref, running.turn_id, loop.loop)
        running.handle = loop.submit(run_turn(spec, hooks), self._on_done(running.turn_id))

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

    def _turn_spec(self, job: Job, llm: LlmClient) -> TurnSpec:
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
        )

    def _finish_running(self) -> Running | None:
        running, self._running = self._running, None
        if running is not None and running.job.kind == "turn":
            self._metrics.turns_in_flight.dec()
        return running

    def _count_turn(self, running: Running, outcome: str) -> None:
        if running.job.kind != "turn":
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

                self._settle(tool_id, turn_id, resolve, Decision(False, "cancelled", "the turn ended"))
        job, outcome = running.job, message.outcome
        if job.kind == "turn":
            self._finish_turn(running, _as_turn_outcome(job, outcome))
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
            event = TurnCancelled(self.session_id)
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


def _as_turn_outcome(job: Job, outcome: object) -> TurnOutcome:
    """A turn's outcome; a turn that raised (anything, SystemExit included) keeps its prompt."""
    if isinstance(outcome, TurnOutcome):
        return outcome
    if isinstance(outcome, asyncio.CancelledError):
        return TurnOutcome(new_messages=[Message.user(job.prompt)], status="cancelled")
    assert isinstance(outcome, BaseException)
    return TurnOutcome(
        new_messages=[Message.user(job.prompt)],
        status="error",
        error=f"{type(outcome).__name__}: {outcome}",
        error_kind="error",
    )
