"""Property-based test of the session state machine against a simple model.

Random sequences of create / child / generate / stream / pause / resume /
cancel / confirm / clear / compact / destroy; after every step the Hive must
agree with the model: the same sessions exist, histories are valid (no tool
call without its result) and have the expected length, paused sessions
refuse turns, children carry their parent's policy, destroyed ones are gone.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sessionhive import (
    ConfirmationNotFound,
    ConfirmationPolicy,
    ConfirmationRequired,
    Hive,
    ScriptedLlm,
    SessionExists,
    SessionNotFound,
    SessionPaused,
    TurnCancelled,
)
from tests.agent.test_turns import assert_valid_history
from tests.conftest import tool_loop_script

IDS = [f"s{n}" for n in range(5)]
POLICIES = [
    ConfirmationPolicy(),
    ConfirmationPolicy(require_confirmation="all", timeout_s=60.0),
    ConfirmationPolicy(require_confirmation=("write_file",), timeout_s=120.0, on_timeout="approve"),
]


@dataclass
class Model:
    parent: str | None
    policy: ConfirmationPolicy
    paused: bool = False
    messages: int = 0


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.workspace = tempfile.TemporaryDirectory()
        self.hive = Hive.start(
            store="memory", llm=ScriptedLlm(tool_loop_script), workspace=self.workspace.name
        )
        self.model: dict[str, Model] = {}

    def teardown(self) -> None:
        self.hive.stop()
        self.workspace.cleanup()

    def _expect_missing(self, session_id: str, call) -> bool:  # type: ignore[no-untyped-def]
        if session_id in self.model:
            return False
        with pytest.raises(SessionNotFound):
            call()
        return True

    @rule(session_id=st.sampled_from(IDS), policy=st.sampled_from(POLICIES))
    def create(self, session_id: str, policy: ConfirmationPolicy) -> None:
        from sessionhive import SessionConfig

        if session_id in self.model:
            with pytest.raises(SessionExists):
                self.hive.create_session(session_id)
            return
        self.hive.create_session(session_id, SessionConfig(confirmation_policy=policy))
        self.model[session_id] = Model(None, policy)

    @rule(parent=st.sampled_from(IDS), child=st.sampled_from(IDS))
    def create_child(self, parent: str, child: str) -> None:
        if child in self.model:
            with pytest.raises(SessionExists):
                self.hive.create_child_session(parent, child)
            return
        if parent not in self.model:
            with pytest.raises(SessionNotFound):
                self.hive.create_child_session(parent, child)
            return
        self.hive.create_child_session(parent, child)
        self.model[child] = Model(parent, self.model[parent].policy)

    @rule(session_id=st.sampled_from(IDS), policy=st.sampled_from(POLICIES))
    def set_policy(self, session_id: str, policy: ConfirmationPolicy) -> None:
        if self._expect_missing(session_id, lambda: self.hive.set_confirmation_policy(session_id, policy)):
            return
        assert self.hive.set_confirmation_policy(session_id, policy) == policy
        self.model[session_id].policy = policy

    def _turn(self, session_id: str, prompt: str, approve: bool, cancel: bool) -> None:
        if self._expect_missing(session_id, lambda: self.hive.generate_streaming(session_id, prompt)):
            return
        model = self.model[session_id]
        if model.paused:
            with pytest.raises(SessionPaused):
                self.hive.generate_streaming(session_id, prompt)
            return
        stream = self.hive.generate_streaming(session_id, prompt)
        cancelled = False
        for event in stream:
            if isinstance(event, ConfirmationRequired):
                if cancel:
                    assert self.hive.cancel_operation(session_id) is True
                    cancelled = True
                else:
                    assert self.hive.confirm_tool(session_id, event.tool_id, approve)
        if cancelled:
            with pytest.raises(TurnCancelled):
                stream.result(timeout=30)
            model.messages += 3  # prompt, the call, its "cancelled" result
        else:
            stream.result(timeout=30)
            model.messages += 4

    @rule(session_id=st.sampled_from(IDS))
    def generate_look(self, session_id: str) -> None:
        if self._expect_missing(session_id, lambda: self.hive.generate(session_id, "look")):
            return
        model = self.model[session_id]
        if model.paused:
            with pytest.raises(SessionPaused):
                self.hive.generate(session_id, "look")
        elif model.policy.requires("list_dir"):
            self._turn(session_id, "look", approve=True, cancel=False)
        else:
            self.hive.generate(session_id, "look", timeout=30)
            model.messages += 4

    @rule(session_id=st.sampled_from(IDS), approve=st.booleans())
    def stream_write_and_confirm(self, session_id: str, approve: bool) -> None:
        self._turn(session_id, "write it", approve=approve, cancel=False)

    @rule(session_id=st.sampled_from(IDS))
    def stream_write_and_cancel(self, session_id: str) -> None:
        self._turn(session_id, "write never", approve=False, cancel=True)

    @rule(session_id=st.sampled_from(IDS))
    def pause(self, session_id: str) -> None:
        if self._expect_missing(session_id, lambda: self.hive.pause_session(session_id)):
            return
        assert self.hive.pause_session(session_id) is (not self.model[session_id].paused)
        self.model[session_id].paused = True

    @rule(session_id=st.sampled_from(IDS))
    def resume(self, session_id: str) -> None:
        if self._expect_missing(session_id, lambda: self.hive.resume_session(session_id)):
            return
        assert self.hive.resume_session(session_id) is self.model[session_id].paused
        self.model[session_id].paused = False

    @rule(session_id=st.sampled_from(IDS))
    def cancel_idle(self, session_id: str) -> None:
        if self._expect_missing(session_id, lambda: self.hive.cancel_operation(session_id)):
            return
        assert self.hive.cancel_operation(session_id) is False

    @rule(session_id=st.sampled_from(IDS))
    def confirm_unknown(self, session_id: str) -> None:
        if self._expect_missing(session_id, lambda: self.hive.confirm_tool(session_id, "call_x", True)):
            return
        with pytest.raises(ConfirmationNotFound):
            self.hive.confirm_tool(session_id, "call_x", True)

    @rule(session_id=st.sampled_from(IDS))
    def clear(self, session_id: str) -> None:
        if self._expect_missing(session_id, lambda: self.hive.clear(session_id)):
            return
        self.hive.clear(session_id)
        self.model[session_id].messages = 0

    @rule(session_id=st.sampled_from(IDS))
    def compact(self, session_id: str) -> None:
        if self._expect_missing(session_id, lambda: self.hive.compact(session_id)):
            return
        model = self.model[session_id]
        self.hive.compact(session_id, timeout=30)
        after = len(self.hive.history(session_id))
        if model.messages < 30:
            assert after == model.messages
        else:
            assert after <= 3 + 1 + 21
        model.messages = after

    @rule(session_id=st.sampled_from(IDS))
    def destroy(self, session_id: str) -> None:
        if self._expect_missing(session_id, lambda: self.hive.destroy_session(session_id)):
            return
        self.hive.destroy_session(session_id)
        doomed = {session_id}
        changed = True
        while changed:
            children = {sid for sid, m in self.model.items() if m.parent in doomed} - doomed
            changed = bool(children)
            doomed |= children
        for sid in doomed:
            del self.model[sid]

    @invariant()
    def hive_agrees_with_the_model(self) -> None:
        assert self.hive.list_sessions() == sorted(self.model)
        for session_id, model in self.model.items():
            history = self.hive.history(session_id)
            assert len(history) == model.messages, session_id
            assert_valid_history(history)
            assert self.hive.get_confirmation_policy(session_id) == model.policy
            assert self.hive.is_child_session(session_id) is (model.parent is not None)
            expected_children = sorted(s for s, m in self.model.items() if m.parent == session_id)
            assert self.hive.get_child_sessions(session_id) == expected_children


SessionMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_session_state_machine = SessionMachine.TestCase
