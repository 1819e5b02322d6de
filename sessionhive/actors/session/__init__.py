"""``SessionActor``: the one owner of one session's state.

Every change to a session (its messages, config, policy, LLM, pause state,
pending confirmations, job queue, version) happens inside this actor's
message handlers, one message at a time. The actor holds its parts, one
concern each, each owning its own state: :mod:`._state` (the record, its
published view, its subscribers, recording a change), :mod:`._jobs` (the job
queue and the running turn, compaction or clear), :mod:`._confirmations`
(the tool calls waiting for a human decision), :mod:`._lifecycle` (destroy,
passivation, shutdown, crashes). Each handler below hands its message to
the part that owns it; the handlers of the remaining calls change the record
directly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sessionhive.actors.messages import (
    Activate,
    Cancel,
    CancelRun,
    Clear,
    Compact,
    Configure,
    Confirm,
    Destroy,
    Generate,
    GetRun,
    Inheritance,
    Journaled,
    ListRuns,
    MaybeAutoCompact,
    Passivate,
    Pause,
    PersistFailed,
    Resume,
    RunEvents,
    SessionCall,
    SetPolicy,
    Shutdown,
    StartRun,
    Subscribe,
    Unsubscribe,
    WaitRun,
)
from sessionhive.actors.session._confirmations import Confirmations, Resolve
from sessionhive.actors.session._job import JobFinished
from sessionhive.actors.session._jobs import Jobs
from sessionhive.actors.session._lifecycle import Lifecycle
from sessionhive.actors.session._state import SessionState
from sessionhive.actors.turn import ConfirmationAsked, ConfirmationTimedOut, TurnEvents
from sessionhive.model.config import ConfirmationPolicy
from sessionhive.model.errors import InvalidConfig, LlmError, LlmNotConfigured
from sessionhive.model.events import PersistenceFailed, SessionPaused, SessionResumed
from sessionhive.model.llm_config import LlmConfig
from sessionhive.runtime import HiveActor

if TYPE_CHECKING:
    from collections.abc import Callable

    import pykka

    from sessionhive.actors.directory import SessionEntry
    from sessionhive.actors.services import HiveServices
    from sessionhive.llm import LlmClient
    from sessionhive.persistence.snapshot import SessionSnapshot
    from sessionhive.runtime import Reply

__all__ = ["SessionActor"]


class SessionActor(HiveActor):
    """One session. Spawned by the SupervisorActor only; talk to it through the Hive."""

    # Slots, not an instance dict: a process may hold a hundred thousand idle sessions.
    __slots__ = ("_confirmations", "_jobs", "_lifecycle", "_session", "session_id")

    def __init__(
        self,
        services: HiveServices,
        supervisor: pykka.ActorRef[Any],
        entry: SessionEntry,
        snapshot: SessionSnapshot,
        llm_client: LlmClient | None = None,
        inherited_llm_config: LlmConfig | None = None,
        created: Reply | None = None,
    ) -> None:
        super().__init__()
        self.session_id = snapshot.session_id
        # The waiting calls: owned by the confirmations part, listed by the record's view.
        pending: dict[str, tuple[int, Resolve]] = {}
        session = SessionState(services, entry, snapshot, pending, llm_client, inherited_llm_config)
        self._session = session
        self._confirmations = Confirmations(session, pending)
        self._jobs = Jobs(session, self.actor_ref, supervisor)
        self._lifecycle = Lifecycle(session, supervisor)
        # Before the first view is published: no reader ever sees a turn
        # that the last process left half-written.
        self._jobs.recover_interrupted_turn()
        if created is not None:
            # A new session: its first snapshot leaves now, and the creator
            # gets its answer without waiting for the actor's first run.
            session.commit_and_answer(created, self.session_id, "create")
        else:
            session.publish()

    def on_receive(self, message: Any) -> Any:
        session = self._session
        metrics = session.metrics
        metrics.child(metrics.messages_handled, "session", type(message).__name__).inc()
        if isinstance(message, SessionCall):
            if self._lifecycle.gone:
                self._lifecycle.redirect(message)
                return None
            try:
                HiveActor.on_receive(self, message)
            except Exception as error:  # noqa: BLE001 - a refused call is the caller's error, not a crash
                session.refuse(message.reply, error)
        else:
            HiveActor.on_receive(self, message)
        if session.view_stale:
            session.publish()
        return None

    # ------------------------------------------------------------------ pykka's hooks: the lifecycle part

    def on_start(self) -> None:
        self._lifecycle.started(self._jobs)

    def dead_letters(self) -> Callable[[Any], None] | None:
        return self._lifecycle.dead_letters()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,  # noqa: ARG002 - pykka's hook signature
        exception_value: BaseException | None,
        traceback: Any,  # noqa: ARG002 - pykka's hook signature
    ) -> None:
        self._lifecycle.crashed(exception_value, self._jobs, self._confirmations, self.actor_ref)

    def on_stop(self) -> None:
        self._lifecycle.stopped(self._jobs)

    def on_Destroy(self, message: Destroy) -> None:
        self._lifecycle.destroy(message, self._jobs, self._confirmations, self.actor_ref)

    def on_Passivate(self, message: Passivate) -> None:
        self._lifecycle.passivate(message, self._jobs, self._confirmations, self.actor_ref)

    def on_Shutdown(self, message: Shutdown) -> None:
        self._lifecycle.shutdown(message, self._jobs, self._confirmations, self.actor_ref)

    # ------------------------------------------------------------------ the jobs part

    def on_Generate(self, message: Generate) -> None:
        self._jobs.generate(message, self._confirmations)

    def on_StartRun(self, message: StartRun) -> None:
        self._jobs.start_run(message, self._confirmations)

    def on_GetRun(self, message: GetRun) -> None:
        self._jobs.get_run(message)

    def on_WaitRun(self, message: WaitRun) -> None:
        self._jobs.wait_run(message)

    def on_CancelRun(self, message: CancelRun) -> None:
        self._jobs.cancel_run(message, self._confirmations)

    def on_ListRuns(self, message: ListRuns) -> None:
        self._jobs.list_runs(message)

    def on_RunEvents(self, message: RunEvents) -> None:
        self._jobs.run_events(message)

    def on_Compact(self, message: Compact) -> None:
        self._jobs.compact(message)

    def on_MaybeAutoCompact(self, message: MaybeAutoCompact) -> None:
        self._jobs.maybe_auto_compact(message)

    def on_Clear(self, message: Clear) -> None:
        self._jobs.clear(message)

    def on_Cancel(self, message: Cancel) -> None:
        self._session.answer(message.reply, self._jobs.cancel_everything(self._confirmations, message.reason))

    def on_Journaled(self, message: Journaled) -> None:
        self._jobs.journaled(message)

    def on_TurnEvents(self, message: TurnEvents) -> None:
        self._jobs.turn_events(message)

    def on_JobFinished(self, message: JobFinished) -> None:
        if self._jobs.finished(message, self._confirmations) and self._lifecycle.gone == "stopped":
            self._lifecycle.stop_now(
                self._jobs, self.actor_ref
            )  # Hive.stop() waited for this turn to hand back its history

    # ------------------------------------------------------------------ the confirmations part

    def on_Confirm(self, message: Confirm) -> None:
        self._confirmations.confirm(message, self._jobs.sink())

    def on_ConfirmationAsked(self, message: ConfirmationAsked) -> None:
        self._confirmations.asked(message, self._jobs.runs(message.turn_id), self._jobs.sink())

    def on_ConfirmationTimedOut(self, message: ConfirmationTimedOut) -> None:
        self._confirmations.timed_out(message, self._jobs.sink())

    # ------------------------------------------------------------------ the record

    def on_Activate(self, message: Activate) -> None:
        self._session.answer(message.reply, self._session.version)

    def on_Inheritance(self, message: Inheritance) -> None:
        session = self._session
        config = session.llm_config or session.inherited_llm_config
        inherited = (session.policy, session.llm_client, config.without_key() if config else None)
        session.answer(message.reply, inherited)

    def on_Configure(self, message: Configure) -> None:
        session = self._session
        thinking, budget, model_config = message.thinking, message.budget, message.model_config
        if thinking is not None and not isinstance(thinking, bool):
            raise InvalidConfig("configure(thinking=...) must be a bool")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise InvalidConfig("configure(budget=...) must be a token count >= 0")
        if model_config is not None and not isinstance(model_config, LlmConfig):
            raise InvalidConfig("configure(model_config=...) must be an LlmConfig")
        if model_config is not None:
            try:
                client = session.services.llm_clients.get(model_config)  # raises before anything changed
            except LlmError as exc:
                # No key for that endpoint (or no SDK): the same answer its turns would give.
                raise LlmNotConfigured(
                    self.session_id, f"{model_config.provider} model {model_config.model!r}: {exc}"
                ) from None
            session.llm_config = model_config
            session.llm_client = client
            session.llm_problem = None
        if thinking is not None:
            session.thinking = thinking
        if budget is not None:
            session.budget = budget
        session.commit_and_answer(message.reply, None, "configure")

    def on_SetPolicy(self, message: SetPolicy) -> None:
        session, policy = self._session, message.policy
        if not isinstance(policy, ConfirmationPolicy):
            raise InvalidConfig("set_confirmation_policy() takes a ConfirmationPolicy")
        session.policy = policy
        session.config = replace(session.config, confirmation_policy=policy)
        session.commit_and_answer(message.reply, policy, "set_confirmation_policy")

    def on_Pause(self, message: Pause) -> None:
        self._switch(message.reply, paused=True)

    def on_Resume(self, message: Resume) -> None:
        self._switch(message.reply, paused=False)

    def _switch(self, reply: Reply | None, *, paused: bool) -> None:
        """Pause or resume; answers whether the state changed."""
        session = self._session
        if (session.state == "paused") == paused:
            session.answer(reply, False)
            return
        session.state = "paused" if paused else "active"
        if paused:
            # Jobs accepted but not started would otherwise run on a paused
            # session; they fail as a new generate would.
            self._jobs.reject_queued(lambda: SessionPaused(self.session_id))
        session.emit(
            SessionPaused(self.session_id) if paused else SessionResumed(self.session_id), of_run=False
        )
        session.commit_and_answer(reply, True, "pause" if paused else "resume")

    def on_Subscribe(self, message: Subscribe) -> None:
        session = self._session
        session.subscribers.append(message.sink)
        unheard, session.unheard = session.unheard, None
        if message.after is not None:
            session.replay(message.sink, message.after)  # the unheard events are kept too
        else:
            for event in unheard or ():
                message.sink.offer(event)  # e.g. the TurnInterrupted found when this session was activated
        session.answer(message.reply, None)

    def on_Unsubscribe(self, message: Unsubscribe) -> None:
        session = self._session
        if message.sink in session.subscribers:
            session.subscribers.remove(message.sink)
        message.sink.close()
        session.answer(message.reply, None)

    def on_PersistFailed(self, message: PersistFailed) -> None:
        self._session.emit(PersistenceFailed(self.session_id, message.operation, message.error), of_run=False)
