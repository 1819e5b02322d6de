"""Jobs and turns: a session runs its turns, compactions and clears one after another.

:class:`Jobs` owns the queue of accepted jobs, the running one and the turn
counter. A job queued behind a running one waits in :attr:`Jobs.queue`; the
running one is a coroutine on the Hive's turn loop that reports back with
messages (``TurnEvents``, ``ConfirmationAsked``, ``JobFinished``), so the
mailbox keeps answering while a turn runs and a history is never
interleaved. The session's record
(:class:`~sessionhive.actors.session._state.SessionState`) and its
confirmations are handed to it: a turn's result lands in the record, and a
turn that ends (or is cancelled) settles the confirmations it left waiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from sessionhive.actors.messages import (
    CancelRun,
    Clear,
    Compact,
    Generate,
    GetRun,
    Journaled,
    ListRuns,
    MaybeAutoCompact,
    RunEvents,
    StartRun,
    WaitRun,
)
from sessionhive.actors.session._content import check_prompt_parts
from sessionhive.actors.session._job import (
    Fanout,
    Job,
    JobFinished,
    Running,
    as_turn_outcome,
    llm_metrics_hook,
)
from sessionhive.actors.session._tasks import ChildTasks
from sessionhive.actors.turn import SessionTurnHooks, TurnEvents
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
from sessionhive.agent.spending import session_spending
from sessionhive.metrics import tracing
from sessionhive.model.errors import InvalidConfig, LlmError, Overloaded, TurnFailed, turn_failure
from sessionhive.model.events import (
    TERMINAL_EVENTS,
    AgentEvent,
    ContextCompacted,
    SessionPaused,
    TurnCancelled,
    TurnEnd,
    TurnError,
    TurnInterrupted,
    TurnStart,
)
from sessionhive.model.messages import RunningTurn, output_to_json
from sessionhive.model.output import output_spec
from sessionhive.model.runs import (
    IdempotencyConflict,
    OnBusy,
    Run,
    RunStatus,
    SessionBusy,
    Webhook,
    make_run_id,
)
from sessionhive.runtime import loop_future

if TYPE_CHECKING:
    from sessionhive._channels import EventSink
    from sessionhive.actors.session._confirmations import Confirmations
    from sessionhive.actors.session._state import SessionState
    from sessionhive.llm import LlmClient
    from sessionhive.runtime import Reply

__all__ = ["Jobs"]

log = logging.getLogger("sessionhive.session")

#: What a turn cancelled by a newer one's ``on_busy`` says (``TurnCancelled.reason``).
INTERRUPTED_BY_NEWER = "interrupted by a newer turn (on_busy='interrupt')"
ROLLED_BACK_BY_NEWER = "rolled back by a newer turn (on_busy='rollback'): its messages left the history"


class Jobs:
    """Generate, compact, clear: queueing, starting, cancelling and finishing jobs."""

    __slots__ = ("_ref", "_session", "_supervisor", "closed", "queue", "running", "turn_seq")

    def __init__(
        self, session: SessionState, ref: pykka.ActorRef[Any], supervisor: pykka.ActorRef[Any]
    ) -> None:
        self._session = session
        self._ref = ref  # the session actor: where a running job reports back
        self._supervisor = supervisor  # where the task tool creates child sessions
        self.queue: list[Job] = []  # a list, not a deque: an empty deque costs 600 bytes per session
        self.running: Running | None = None
        self.turn_seq = 0
        self.closed = False  # the session is going away: no job starts any more

    # ------------------------------------------------------------------ accepting jobs

    def generate(self, message: Generate, confirmations: Confirmations) -> None:
        job = Job("turn", message.reply, message.prompt, message.sink, trace_parent=message.trace_parent)
        job.output = message.output
        job.parts = message.parts
        self._accept_turn(
            message.prompt, message.idempotency_key, message.on_busy, confirmations, job, message.accepted
        )

    def start_run(self, message: StartRun, confirmations: Confirmations) -> None:
        job = Job("turn", None, message.prompt, trace_parent=message.trace_parent, webhook=message.webhook)
        job.output = message.output
        job.parts = message.parts
        self._accept_turn(
            message.prompt, message.idempotency_key, message.on_busy, confirmations, job, message.reply
        )

    def _accept_turn(
        self,
        prompt: str,
        key: str | None,
        on_busy: OnBusy,
        confirmations: Confirmations,
        job: Job,
        accepted: Reply | None,
    ) -> None:
        """Accept ``job`` as a new run (answering ``accepted`` with it), or join the run its key names."""
        session = self._session
        if not isinstance(prompt, str):
            raise InvalidConfig("the prompt must be a string")
        if key is not None:
            existing = session.run_by_key(key)
            if existing is not None:
                if existing.prompt != prompt:
                    raise IdempotencyConflict(session.session_id, key, existing.run_id)
                self._join(existing, job, accepted)
                return
        if session.state == "paused":
            raise SessionPaused(session.session_id)
        if job.parts:
            check_prompt_parts(session, job.parts)
        if session.llm() is None:
            raise session.no_llm()
        busy = self.running is not None or bool(self.queue)
        if busy and on_busy == "reject":
            raise SessionBusy(session.session_id)
        self._check_queue_room()
        webhook_url = job.webhook.url if job.webhook is not None else None
        run = Run(
            run_id=make_run_id(session.session_id),
            session_id=session.session_id,
            prompt=prompt,
            idempotency_key=key,
            created_at=time.time(),
            webhook_url=webhook_url,
        )
        job.run_id = run.run_id
        session.add_run(run)
        if busy and on_busy in ("interrupt", "rollback"):
            reason = INTERRUPTED_BY_NEWER if on_busy == "interrupt" else ROLLED_BACK_BY_NEWER
            self.cancel_everything(confirmations, reason, rollback=on_busy == "rollback")
        # A durable session records the run and its key before anyone is told the run
        # exists (a retry after a crash finds them); a batched one stores it with the
        # turn's first step (its next write), as it stores everything else: without a wait.
        waits = session.stored() and session.services.persistence.waits_for_commit(session.config.durability)
        job.accepted_ack = session.persist() if waits else None
        self._enqueue(job)
        session.deliver(accepted, session.get_run(run.run_id), job.accepted_ack, "start_run")

    def _join(self, run: Run, job: Job, accepted: Reply | None) -> None:
        """A repeated idempotency key: answer with its run, stream its events, wait for its result."""
        session = self._session
        running = self._job_of(run.run_id)
        if job.sink is not None:
            session.replay(job.sink, 0, run.run_id)
        if running is None:  # finished
            session.deliver(accepted, run, None, "start_run")
            if job.sink is not None:
                job.sink.close()
            session.deliver(job.reply, self._outcome_of(run), None, "generate")
            return
        if job.sink is not None:
            self._follow(running, job.sink)
        if job.reply is not None:
            running.followers.append(job.reply)
        session.deliver(accepted, session.get_run(run.run_id), running.accepted_ack, "start_run")

    @staticmethod
    def _follow(job: Job, sink: EventSink) -> None:
        if job.sink is None:
            job.sink = sink
        elif isinstance(job.sink, Fanout):
            job.sink.sinks.append(sink)
        else:
            job.sink = Fanout(job.sink, sink)

    def _outcome_of(self, run: Run) -> object:
        """What ``generate`` answers for a finished run, from its record: its result or its error."""
        event = self._session.terminal_event(run)
        if isinstance(event, TurnEnd):
            return event.result
        if isinstance(event, TurnCancelled):
            return event
        return TurnFailed(f"session {run.session_id!r}: run {run.run_id} {run.status}: {run.error}")

    def _job_of(self, run_id: str) -> Job | None:
        """The queued or running job of an unfinished run."""
        running = self.running
        if running is not None and running.job.run_id == run_id:
            return running.job
        return next((job for job in self.queue if job.run_id == run_id), None)

    # ------------------------------------------------------------------ runs

    def get_run(self, message: GetRun) -> None:
        self._session.answer(message.reply, self._session.get_run(message.run_id))

    def list_runs(self, message: ListRuns) -> None:
        session = self._session
        session.answer(message.reply, [session.run_view(run) for run in session.runs.values()])

    def wait_run(self, message: WaitRun) -> None:
        session = self._session
        run = session.get_run(message.run_id)
        job = None if run.done else self._job_of(run.run_id)
        if job is None:
            session.answer(message.reply, run)
        elif message.reply is not None:
            job.run_waiters.append(message.reply)

    def run_events(self, message: RunEvents) -> None:
        session = self._session
        run = session.get_run(message.run_id)
        session.replay(message.sink, message.after or 0, run.run_id)
        job = None if run.done else self._job_of(run.run_id)
        if job is None:
            message.sink.close()
        else:
            self._follow(job, message.sink)
        session.answer(message.reply, None)

    def cancel_run(self, message: CancelRun, confirmations: Confirmations) -> None:
        session = self._session
        run = session.get_run(message.run_id)
        running = self.running
        if running is not None and running.job.run_id == run.run_id:
            cancelled = not running.cancelled and running.handle is not None
            if cancelled:
                confirmations.cancel(message.reason, running.job.sink, running.turn_id)
                self._cancel(running, message.reason)
            session.answer(message.reply, cancelled)
            return
        job = self._job_of(run.run_id)
        if job is not None:
            self.queue.remove(job)
            session.metrics.turn_queue_depth.dec()
            self._reject(job, TurnCancelled(session.session_id, f"{message.reason}, before it started"))
        session.answer(message.reply, job is not None)

    def compact(self, message: Compact) -> None:
        self._enqueue(Job("compact", message.reply))

    def maybe_auto_compact(self, message: MaybeAutoCompact) -> None:
        if not self._should_auto_compact():
            self._session.answer(message.reply, False)
            return
        self._enqueue(Job("auto_compact", message.reply))

    def clear(self, message: Clear) -> None:
        self._enqueue(Job("clear", message.reply))

    def recover_interrupted_turn(self) -> None:
        """A turn the last process left running (found in the journal): close it, or resume it.

        Closing appends a result for each tool call left open (the one that
        was running: its effects are unknown) and a closing answer, so the
        history is valid for any provider. ``resume_interrupted=True``
        continues the turn instead: no stored model answer is asked again,
        no tool with a stored result runs again. The turn's run keeps its id
        when resumed and is ``interrupted`` when closed; runs that were still
        queued are ``interrupted`` too (their callers are gone with the process).
        """
        session = self._session
        running = session.running_turn
        unfinished = [run for run in session.runs.values() if not run.done]
        if running is None:
            if unfinished:
                self._interrupt_runs(unfinished)
                session.persist()
            return
        history, journaled = recovery.journaled_turn(session.messages, running)
        resume = session.config.resume_interrupted and bool(journaled) and session.llm() is not None
        unfinished_calls = [call.id for call in recovery.unfinished_calls(journaled)]
        log.warning(
            "session %s: turn %d was interrupted by a stop of the process; %s",
            session.session_id,
            running.turn_id,
            "resuming it" if resume else "closing it",
        )
        turn_run = next((run for run in unfinished if run.status in ("running", "waiting")), None)
        run_id = turn_run.run_id if turn_run is not None else None
        interrupted = TurnInterrupted(
            session.session_id, running.turn_id, running.prompt, resume, unfinished_calls
        )
        session.stamp(interrupted, run_id)
        session.unheard = [interrupted]
        session.running_turn = None
        if resume:
            self._interrupt_runs([run for run in unfinished if run is not turn_run])
            session.messages = history
            job = Job("resume", None, running.prompt, journaled=journaled, running_call=running.running_call)
            job.output = output_spec(running.output_schema)  # its model class is gone: checked by the schema
            job.trace_link = running.traceparent
            job.run_id = run_id
            self.queue.append(job)  # started by on_start, once the actor runs
            session.metrics.turn_queue_depth.inc()
            return
        self._interrupt_runs(unfinished)
        session.messages = session.messages + recovery.close_interrupted(session.messages, running)
        session.persist()

    def _interrupt_runs(self, runs: list[Run]) -> None:
        """Mark runs a stopped process left unfinished ``interrupted`` (and hand their webhooks over).

        Each ends with a TurnError of kind ``interrupted``: a reader of its
        events (kept from now on) sees it end like any other run.
        """
        session = self._session
        for run in runs:
            started = run.status != "queued"
            error = f"the process stopped before it {'finished' if started else 'started'}"
            ended_event = TurnError(session.session_id, error, "interrupted")
            session.stamp(ended_event, run.run_id)
            session.unheard = [*(session.unheard or ()), ended_event]
            ended = session.update_run(
                run.run_id,
                "interrupted",
                ended_at=time.time(),
                error=error,
                last_event_id=ended_event.event_id,
            )
            webhooks = session.services.webhooks
            if ended is not None and ended.webhook_url is not None and webhooks is not None:
                webhooks.run_finished(ended, Webhook(ended.webhook_url))

    def _check_queue_room(self) -> None:
        services = self._session.services
        # The queue is bounded like the mailbox: nothing grows without bound.
        if len(self.queue) >= services.mailbox_size:
            services.metrics.child(services.metrics.calls_rejected, "jobs").inc()
            raise Overloaded(self._session.session_id, services.mailbox_size)

    def _enqueue(self, job: Job) -> None:
        services = self._session.services
        self._check_queue_room()
        self.queue.append(job)
        services.metrics.turn_queue_depth.inc()
        self.start_next()

    def _should_auto_compact(self) -> bool:
        config = self._session.config
        return config.auto_compact and self._session.context_usage().percent >= config.auto_compact_threshold

    # ------------------------------------------------------------------ rejecting and cancelling

    def _reject(self, job: Job, error: BaseException, status: RunStatus | None = None) -> None:
        """Refuse a job that will not run (on): its caller, its stream and its run learn why."""
        session = self._session
        if job.run_id is not None and isinstance(error, AgentEvent):
            session.stamp(error, job.run_id)
        if job.sink is not None:
            if isinstance(error, AgentEvent):
                job.sink.offer(error)
            job.sink.close()
        if job.run_id is not None:
            status = status or ("cancelled" if isinstance(error, TurnCancelled) else "failed")
            reason = error.reason if isinstance(error, TurnCancelled) else str(error)
            ended_event: AgentEvent
            if isinstance(error, AgentEvent) and isinstance(error, TERMINAL_EVENTS):
                ended_event = error
            else:
                # Not an event a run ends with (SessionPaused, a crash): its record and replay
                # still end with one.
                kind = "interrupted" if status == "interrupted" else "error"
                ended_event = TurnError(session.session_id, reason, kind)
                session.stamp(ended_event, job.run_id)
            run = session.update_run(
                job.run_id, status, ended_at=time.time(), error=reason, last_event_id=ended_event.event_id
            )
            self._run_ended(job, run, error, None)
        session.refuse(job.reply, error)

    def _run_ended(
        self, job: Job, run: Run | None, value: object, ack: concurrent.futures.Future[None] | None
    ) -> None:
        """Hand a run's webhook over, then tell everyone else waiting for the run that it ended.

        The outbox commits the delivery before anyone hears of the end: a
        process killed after answering a waiter has its webhook stored.
        """
        session = self._session
        webhooks = session.services.webhooks
        if run is not None and job.webhook is not None and webhooks is not None:
            webhooks.run_finished(run, job.webhook)
        for follower in job.followers:
            session.deliver(follower, value, ack, "generate", job.run_id)
        if run is None:
            return
        for waiter in job.run_waiters:
            session.deliver(waiter, run, ack, "wait_run", run.run_id)

    def reject_queued(self, error: Callable[[], BaseException]) -> bool:
        """Refuse every job not started yet with a fresh ``error()``; True if there was any."""
        rejected = False
        while self.queue:
            job = self.queue.pop(0)
            self._session.metrics.turn_queue_depth.dec()
            self._reject(job, error())
            rejected = True
        return rejected

    def cancel_everything(self, confirmations: Confirmations, reason: str, *, rollback: bool = False) -> bool:
        """Cancel pending confirmations, queued jobs and the running job; True if there was any.

        ``rollback``: the running turn's messages leave the history when it ends.
        """
        session_id, running = self._session.session_id, self.running
        did_something = confirmations.cancel(reason, self.sink())
        if self.reject_queued(lambda: TurnCancelled(session_id, f"{reason}, before it started")):
            did_something = True
        if running is not None and not running.cancelled and running.handle is not None:
            running.rollback = rollback and running.job.is_turn
            self._cancel(running, reason)
            did_something = True
        return did_something

    @staticmethod
    def _cancel(running: Running, reason: str) -> None:
        assert running.handle is not None
        running.cancelled = True
        running.cancel_reason = reason
        running.handle.cancel()

    def abandon_running(self, error: BaseException, outcome: str) -> None:
        """End the running job without its result (destroy, crash, stop): count it and tell its caller."""
        running = self._finish_running()
        if running is None:
            return
        if running.handle is not None:
            running.handle.cancel()
        self._count_turn(running, outcome)
        self._reject(running.job, error, "interrupted" if outcome == "error" else None)

    # ------------------------------------------------------------------ the running job

    def sink(self) -> EventSink | None:
        """Where the running job streams its events, if anyone streams it."""
        return self.running.job.sink if self.running is not None else None

    def runs(self, turn_id: int) -> bool:
        """Whether turn ``turn_id`` is the running job and was not cancelled."""
        running = self.running
        return running is not None and running.turn_id == turn_id and not running.cancelled

    def start_next(self) -> None:
        session = self._session
        metrics = session.metrics
        while self.running is None and self.queue and not self.closed:
            job = self.queue.pop(0)
            metrics.turn_queue_depth.dec()
            if job.kind == "clear":
                session.messages = ()
                session.history_epoch += 1
                session.context_used = 0
                session.commit_and_answer(job.reply, None, "clear")
                continue
            if job.kind == "turn" and session.state == "paused":  # a resumed turn finishes regardless
                self._reject(job, SessionPaused(session.session_id))
                continue
            llm = session.llm()
            if job.is_turn and llm is None:  # configure() may have changed since it was queued
                self._reject(job, session.no_llm())
                continue
            self.turn_seq += 1
            running = Running(job, self.turn_seq, None, time.perf_counter())
            self.running = running
            if job.run_id is not None:
                run = session.get_run(job.run_id)
                session.current_run, session.current_run_last_event = run.run_id, run.last_event_id
                session.update_run(run.run_id, "running", started_at=run.started_at or time.time())
            if job.is_turn:
                assert llm is not None
                metrics.turns_in_flight.inc()
                self._start_turn(running, llm)
            else:
                self._start_compaction(running, llm)

    def _on_done(self, turn_id: int) -> Callable[[object], None]:
        ref = self._ref

        def on_done(result: object) -> None:
            try:
                ref.tell(JobFinished(turn_id, result))
            except pykka.ActorDeadError:
                pass  # the session was destroyed meanwhile

        return on_done

    def _start_turn(self, running: Running, llm: LlmClient) -> None:
        session, job = self._session, running.job
        loop = session.services.turn_loop
        spec = self._turn_spec(job, llm, running.turn_id)
        session.emit(TurnStart(session.session_id, job.prompt, running.turn_id), job.sink)
        hooks = SessionTurnHooks(self._ref, running.turn_id, loop.loop)
        running.trace = tracing.TurnTrace(
            session.session_id,
            running.turn_id,
            job.trace_parent,
            link=job.trace_link,
            content=session.services.trace_content,
            provider=llm.provider,
            model=llm.model,
        )
        # The turn journals its steps (a resumed one too: without the record, a
        # second crash would resume from the first one's journal and run its tools again).
        running_call = job.running_call if job.kind == "resume" else None
        schema = dict(job.output.schema) if job.output is not None else None
        session.running_turn = RunningTurn(
            running.turn_id,
            job.prompt,
            time.time(),
            len(session.messages),
            running_call,
            output_schema=schema,
        )
        if job.kind == "resume":
            turn = functools.partial(resume_turn, spec, hooks, job.journaled, job.running_call)
        else:
            turn = functools.partial(run_turn, spec, hooks)
        running.handle = loop.submit(running.trace.run(turn, job.prompt), self._on_done(running.turn_id))

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
        session = self._session
        ref, turns, link = self._ref, session.services.turn_loop, session.services.persistence
        stored, durability = session.stored(), session.config.durability
        permission = session.config.permission_policy

        def acts_outside(journal: TurnJournal) -> bool:
            if journal.running_call is not None:
                return True
            last = journal.messages[-1] if journal.messages else None
            if last is None or not last.tool_calls:
                return False
            return permission is not None or any(
                session.policy.requires(call.name) for call in last.tool_calls
            )

        def on_round(journal: TurnJournal) -> Awaitable[None] | None:
            wait = stored and link.waits_for_commit(durability if acts_outside(journal) else "batched")
            ack: concurrent.futures.Future[None] | None = concurrent.futures.Future() if wait else None
            try:
                ref.tell(Journaled(turn_id, journal, ack))
            except pykka.ActorDeadError:
                return None  # the session is gone; the turn is being abandoned
            return None if ack is None else loop_future(ack, turns.loop)

        return on_round

    def journaled(self, message: Journaled) -> None:
        session, running = self._session, self.running
        if running is None or running.turn_id != message.turn_id or session.running_turn is None:
            if message.ack is not None:
                message.ack.set_result(None)  # a late step of a turn that ended: nothing to store
            return
        # Kept even for a session outside the store: a crashed actor's
        # restart (from its in-memory snapshot) recovers the steps too.
        session.journal = message.journal.messages
        session.touch()  # history() shows the running turn's steps
        traceparent = running.trace.traceparent if running.trace is not None else None
        session.running_turn = replace(
            session.running_turn, running_call=message.journal.running_call, traceparent=traceparent
        )
        if session.stored():
            tracing.note_step(session.session_id, running.trace)
            session.version += 1
            session.services.persistence.save(session.session_id, session.snapshot, message.ack)

    def _start_compaction(self, running: Running, llm: LlmClient | None) -> None:
        session = self._session
        target = int(session.config.auto_compact_threshold * session.context_usage().max_tokens)
        hook = llm_metrics_hook(self._session.metrics, llm) if llm is not None else None
        compacting = run_compaction(
            session.session_id, session.messages, session.config.system_prompt, llm, target, hook
        )
        running.handle = session.services.turn_loop.submit(compacting, self._on_done(running.turn_id))

    def _turn_spec(self, job: Job, llm: LlmClient, turn_id: int) -> TurnSpec:
        session = self._session
        config, services, metrics = session.config, session.services, session.metrics

        def on_tool_call(tool: str, outcome: str) -> None:
            metrics.child(metrics.tool_calls, tool, outcome).inc()
            tracing.note_tool_outcome(outcome)
            seconds = tracing.tool_seconds()
            if seconds is not None:
                duration = metrics.child(metrics.tool_duration, tool, outcome)
                duration.observe(seconds, tracing.exemplar())

        workspace = Path(config.workspace) if config.workspace else services.workspace
        return TurnSpec(
            session_id=session.session_id,
            prompt=job.prompt,
            history=session.messages,
            system=config.system_prompt,
            llm=llm,
            tools=services.tools,
            workspace=workspace,
            confirmation_policy=session.policy,
            permission_policy=config.permission_policy,
            max_tool_rounds=config.max_tool_rounds,
            thinking=session.thinking,
            budget=session.budget,
            stream=session.listened(job.sink),
            on_llm_call=llm_metrics_hook(self._session.metrics, llm),
            on_tool_call=on_tool_call,
            allow_network=config.allow_network,
            mcp_servers=config.mcp_servers,
            on_round=self._journal_hook(turn_id),
            turn_key=session.version,  # grows with every turn's end: names unnamed tool calls uniquely
            prompt_parts=job.parts,
            spending=session_spending(
                services.budgets, services.directory.parents, session.session_id, metrics
            ),
            task=ChildTasks(session, self._supervisor) if config.task_tool else None,
            output=job.output,
        )

    # ------------------------------------------------------------------ finishing

    def _finish_running(self) -> Running | None:
        running, self.running = self.running, None
        if running is not None and running.job.is_turn:
            self._session.metrics.turns_in_flight.dec()
        return running

    def _count_turn(self, running: Running, outcome: str) -> None:
        if not running.job.is_turn:
            return
        metrics = self._session.metrics
        metrics.child(metrics.turns, outcome).inc()
        exemplar = running.trace.exemplar() if running.trace is not None else None
        metrics.child(metrics.turn_duration, outcome).observe(time.perf_counter() - running.started, exemplar)

    def turn_events(self, message: TurnEvents) -> None:
        running = self.running
        if running is None or running.turn_id != message.turn_id:
            return  # late events of a turn that already ended
        sink = running.job.sink
        for event in message.events:
            self._session.emit(event, sink)

    def finished(self, message: JobFinished, confirmations: Confirmations) -> bool:
        """The running job's result; False if it belongs to a job that ended already."""
        running = self.running
        if running is None or running.turn_id != message.turn_id:
            return False
        self._finish_running()
        job, outcome = running.job, message.outcome
        # Calls still waiting only if the turn crashed while it waited.
        confirmations.cancel("the turn ended", None, message.turn_id)
        if job.is_turn:
            self._finish_turn(running, as_turn_outcome(job, outcome, self._session.journal or job.journaled))
        else:
            self._finish_compaction(running, outcome)
        self.start_next()
        return True

    def _finish_turn(self, running: Running, outcome: TurnOutcome) -> None:
        session, job = self._session, running.job
        new_messages = tuple(outcome.new_messages)
        if running.rollback:
            # on_busy="rollback": the turn leaves no trace in the history. Its journaled
            # steps may be stored already: a new epoch makes the store rewrite the history.
            if session.journal:
                session.history_epoch += 1
            new_messages = ()
        # A rolled-back turn ends cancelled even if it finished before the cancel reached it.
        ended = "cancelled" if running.rollback else outcome.status
        session.messages = session.messages + new_messages
        session.running_turn = None  # the turn's messages are history now: the journal is done
        session.journal = ()
        session.usage = session.usage + outcome.usage  # spent either way
        if outcome.last_usage is not None and not running.rollback:
            session.context_used = outcome.last_usage.total_tokens
        self._count_turn(running, {"ok": "completed", "error": "error", "cancelled": "cancelled"}[ended])
        if self._should_auto_compact() and ended == "ok":
            # Compaction happens before the next queued turn sees the history.
            self.queue.insert(0, Job("auto_compact", None))
            session.metrics.turn_queue_depth.inc()
        event: AgentEvent
        value: object
        status: RunStatus
        run_changes: dict[str, Any] = {"ended_at": time.time(), "usage": outcome.usage}
        if ended == "ok":
            # The result carries the turn's own messages, not the whole history.
            result = outcome.result(new_messages)
            event = TurnEnd(session.session_id, result)
            value = result
            status = "completed"
            run_changes.update(
                text=result.text, stop_reason=result.stop_reason, output=output_to_json(result.output)
            )
        elif ended == "cancelled":
            event = TurnCancelled(session.session_id, running.cancel_reason)
            value = event
            status = "cancelled"
            run_changes.update(stop_reason="cancelled", error=running.cancel_reason)
        else:
            event = TurnError(session.session_id, outcome.error, outcome.error_kind)
            failure = turn_failure(outcome.error_kind, f"session {session.session_id!r}: {outcome.error}")
            failure.event = event
            value = failure
            status = "failed"
            run_changes.update(stop_reason="error", error=outcome.error)
        run: Run | None = None
        if job.run_id is not None:
            # The run's end is stored with the turn's: the one snapshot below records both.
            session.stamp(event, job.run_id)
            run = session.update_run(job.run_id, status, last_event_id=event.event_id, **run_changes)
        if session.stored():
            tracing.note_step(session.session_id, running.trace)
        ack = session.persist()
        session.emit(event, job.sink)
        if job.sink is not None:
            job.sink.close()
        self._run_ended(job, run, value, ack)
        session.deliver(job.reply, value, ack, "generate", job.run_id)

    def _finish_compaction(self, running: Running, outcome: object) -> None:
        session, job = self._session, running.job
        trigger = "auto" if job.kind == "auto_compact" else "manual"
        if isinstance(outcome, BaseException):
            if isinstance(outcome, asyncio.CancelledError):
                session.refuse(job.reply, TurnCancelled(session.session_id, "compaction cancelled"))
            else:
                log.warning("session %s: compaction failed: %r", session.session_id, outcome)
                session.refuse(
                    job.reply, LlmError(f"session {session.session_id!r}: compaction failed: {outcome}")
                )
            return
        assert isinstance(outcome, CompactionOutcome)
        before = len(session.messages)
        percent = session.context_usage().percent
        value: object = True if job.kind == "auto_compact" else None
        if outcome.messages == session.messages:
            session.answer(job.reply, value)
            return
        session.messages = outcome.messages
        session.history_epoch += 1
        session.context_used = compaction.estimate_tokens(session.messages, session.config.system_prompt)
        session.usage = session.usage + outcome.usage
        session.metrics.child(session.metrics.compactions, trigger).inc()
        session.emit(ContextCompacted(session.session_id, before, len(session.messages), percent, trigger))
        session.commit_and_answer(job.reply, value, "compact")
