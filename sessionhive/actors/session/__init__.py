"""``SessionActor``: the one owner of one session's state.

Every change to a session (its messages, config, policy, LLM, pause state,
pending confirmations, job queue, version) happens inside this actor's
message handlers, one message at a time. The actor is assembled from parts,
one concern each: :mod:`._state` (the state, its published view, recording a
change), :mod:`._jobs` (turns, compactions, clears), :mod:`._confirmations`
(human confirmation, cancel), :mod:`._lifecycle` (destroy, passivation,
shutdown, crashes); the handlers of the remaining calls are below.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sessionhive.actors.messages import (
    Activate,
    Configure,
    Inheritance,
    Pause,
    PersistFailed,
    Resume,
    SessionCall,
    SetPolicy,
    Subscribe,
    Unsubscribe,
)
from sessionhive.actors.session._lifecycle import LifecyclePart
from sessionhive.model.config import ConfirmationPolicy
from sessionhive.model.errors import InvalidConfig, LlmError, LlmNotConfigured
from sessionhive.model.events import PersistenceFailed, SessionPaused, SessionResumed
from sessionhive.model.llm_config import LlmConfig
from sessionhive.runtime import HiveActor

__all__ = ["SessionActor"]


class SessionActor(LifecyclePart):
    """One session. Spawned by the SupervisorActor only; talk to it through the Hive."""

    def on_receive(self, message: Any) -> Any:
        self._metrics.child(self._metrics.messages_handled, "session", type(message).__name__).inc()
        if isinstance(message, SessionCall):
            if self._gone:
                self._redirect(message)
                return None
            try:
                HiveActor.on_receive(self, message)
            except Exception as error:  # noqa: BLE001 - a refused call is the caller's error, not a crash
                self._refuse(message.reply, error)
        else:
            HiveActor.on_receive(self, message)
        if self._view_stale:
            self._publish()
        return None

    def on_Activate(self, message: Activate) -> None:
        self._answer(message.reply, self._version)

    def on_Inheritance(self, message: Inheritance) -> None:
        config = self._llm_config or self._inherited_llm_config
        inherited = (self._policy, self._llm_client, config.without_key() if config else None)
        self._answer(message.reply, inherited)

    def on_Configure(self, message: Configure) -> None:
        thinking, budget, model_config = message.thinking, message.budget, message.model_config
        if thinking is not None and not isinstance(thinking, bool):
            raise InvalidConfig("configure(thinking=...) must be a bool")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise InvalidConfig("configure(budget=...) must be a token count >= 0")
        if model_config is not None and not isinstance(model_config, LlmConfig):
            raise InvalidConfig("configure(model_config=...) must be an LlmConfig")
        if model_config is not None:
            try:
                client = self._services.llm_clients.get(model_config)  # raises before anything changed
            except LlmError as exc:
                # No key for that endpoint (or no SDK): the same answer its turns would give.
                raise LlmNotConfigured(
                    self.session_id, f"{model_config.provider} model {model_config.model!r}: {exc}"
                ) from None
            self._llm_config = model_config
            self._llm_client = client
            self._llm_problem = None
        if thinking is not None:
            self._thinking = thinking
        if budget is not None:
            self._budget = budget
        self._commit_and_answer(message.reply, None, "configure")

    def on_SetPolicy(self, message: SetPolicy) -> None:
        policy = message.policy
        if not isinstance(policy, ConfirmationPolicy):
            raise InvalidConfig("set_confirmation_policy() takes a ConfirmationPolicy")
        self._policy = policy
        self._config = replace(self._config, confirmation_policy=policy)
        self._commit_and_answer(message.reply, policy, "set_confirmation_policy")

    def on_Pause(self, message: Pause) -> None:
        if self._state == "paused":
            self._answer(message.reply, False)
            return
        self._state = "paused"
        # Jobs accepted but not started would otherwise run on a paused
        # session; they fail as a new generate would.
        self._reject_queued(lambda: SessionPaused(self.session_id))
        self._emit(SessionPaused(self.session_id))
        self._commit_and_answer(message.reply, True, "pause")

    def on_Resume(self, message: Resume) -> None:
        if self._state == "active":
            self._answer(message.reply, False)
            return
        self._state = "active"
        self._emit(SessionResumed(self.session_id))
        self._commit_and_answer(message.reply, True, "resume")

    def on_Subscribe(self, message: Subscribe) -> None:
        self._subscribers.append(message.sink)
        unheard, self._unheard = self._unheard, None
        for event in unheard or ():
            message.sink.offer(event)  # e.g. the TurnInterrupted found when this session was activated
        self._answer(message.reply, None)

    def on_Unsubscribe(self, message: Unsubscribe) -> None:
        if message.sink in self._subscribers:
            self._subscribers.remove(message.sink)
        message.sink.close()
        self._answer(message.reply, None)

    def on_PersistFailed(self, message: PersistFailed) -> None:
        self._emit(PersistenceFailed(self.session_id, message.operation, message.error))
