"""A session actor that crashes (a bug in a handler) is restarted from its last snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionhive import Hive, ScriptedLlm, SessionConfig, TurnFailed, TurnInterrupted
from sessionhive.actors import session as session_module
from sessionhive.agent.recovery import history_problems
from tests.conftest import tool_loop_script


@pytest.mark.parametrize("storage", ["default", "memory"])
def test_crashed_session_is_restarted_and_keeps_its_history(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: str
) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    with Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        hive.create_session("s", SessionConfig(storage=storage))  # type: ignore[arg-type]
        hive.generate("s", "look first")
        before = hive.history("s")

        original = session_module.SessionActor.on_TurnEvents
        crashes: list[object] = []

        def broken(self, message):  # type: ignore[no-untyped-def]
            if not crashes:
                crashes.append(message)
                raise RuntimeError("injected handler bug")
            return original(self, message)

        monkeypatch.setattr(session_module.SessionActor, "on_TurnEvents", broken)
        with pytest.raises(TurnFailed, match="crashed"):
            hive.generate("s", "look crash")
        # Restarted from the last snapshot, where the turn journal had kept the
        # crashed turn's steps: that turn is closed, the history stays valid.
        after = hive.history("s")
        assert after[: len(before)] == before
        assert after[len(before)].text == "look crash"
        assert history_problems(after) == []
        with hive.subscribe("s") as events:  # the first subscriber hears of the closed turn
            interrupted = events.get(timeout=10)
            assert isinstance(interrupted, TurnInterrupted)
            assert interrupted.prompt == "look crash" and not interrupted.resumed
        result = hive.generate("s", "look again")
        assert result.text.startswith("done:")
        assert len(hive.history("s")) == len(after) + 4
        restarted = hive.metrics.registry.get_sample_value(
            "sessionhive_session_lifecycle_total", {"event": "restarted"}
        )
        assert restarted == 1
