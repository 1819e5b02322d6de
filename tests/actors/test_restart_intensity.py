"""Restart intensity: a session that keeps crashing is restarted a few times, then failed until reset."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionhive import AsyncHive, Hive, ScriptedLlm, SessionFailed, SessionNotFound, TurnFailed
from sessionhive.actors import session as session_module
from sessionhive.agent.recovery import history_problems
from tests.conftest import tool_loop_script

BROKEN = "broken"


@pytest.fixture
def crashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """The ids of the sessions whose actor crashes on every turn (a handler bug); clear it to heal them."""
    crashing_ids = {BROKEN}
    crashes: list[int] = []
    original = session_module.SessionActor.on_TurnEvents

    def broken(self, message):  # type: ignore[no-untyped-def]
        if self.session_id in crashing_ids:
            crashes.append(1)
            raise RuntimeError(f"injected handler bug #{len(crashes)}")
        return original(self, message)

    monkeypatch.setattr(session_module.SessionActor, "on_TurnEvents", broken)
    yield crashing_ids


def sample(hive: Hive, name: str, labels: dict[str, str] | None = None) -> float:
    value = hive.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


def lifecycle(hive: Hive, event: str) -> float:
    return sample(hive, "sessionhive_session_lifecycle_total", {"event": event})


@pytest.mark.parametrize("backend", ["asyncio", "pooled", "threads"])
def test_a_session_crashing_on_every_turn_is_failed_after_the_limit_and_reset_brings_it_back(
    tmp_path: Path, workspace: Path, crashing: set[str], backend: str
) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    with Hive.start(
        store=store,
        llm=ScriptedLlm(tool_loop_script),
        workspace=workspace,
        actor_backend=backend,
        restart_limit=3,
        restart_window=60.0,
    ) as hive:
        hive.create_session(BROKEN)
        hive.create_session("healthy")
        hive.generate("healthy", "look before")

        # Three crashes are restarted (from the last snapshot); the fourth in the window marks it failed.
        for attempt in range(1, 4):
            with pytest.raises(TurnFailed, match=f"crashed.*injected handler bug #{attempt}"):
                hive.generate(BROKEN, f"look {attempt}")
            # The next call waits for the restarted actor, so the restart is counted by then.
            assert history_problems(hive.history(BROKEN)) == []
            assert lifecycle(hive, "restarted") == attempt
            assert sample(hive, "sessionhive_session_failures_total") == 0
        with pytest.raises(TurnFailed, match="injected handler bug #4"):
            hive.generate(BROKEN, "look 4")

        with pytest.raises(SessionFailed, match="injected handler bug #4") as refused:
            hive.generate(BROKEN, "look 5")
        assert refused.value.session_id == BROKEN
        assert "injected handler bug #4" in refused.value.last_error
        with pytest.raises(SessionFailed):
            hive.history(BROKEN)
        assert lifecycle(hive, "restarted") == 3
        assert lifecycle(hive, "failed") == 1
        assert sample(hive, "sessionhive_session_failures_total") == 1

        # The other session never noticed.
        assert hive.generate("healthy", "look after").text.startswith("done:")
        assert history_problems(hive.history("healthy")) == []
        assert hive.reset_session("healthy") is False

        # Healed and reset: it works again, on the history it had kept.
        crashing.clear()
        assert hive.reset_session(BROKEN) is True
        assert hive.reset_session(BROKEN) is False
        history = hive.history(BROKEN)
        assert history_problems(history) == []
        assert [m.text for m in history if m.role == "user"] == [f"look {n}" for n in range(1, 5)]
        assert hive.generate(BROKEN, "look healed").text.startswith("done:")
        # Nothing more was counted by the reset or the healthy turn.
        assert lifecycle(hive, "restarted") == 3
        assert lifecycle(hive, "failed") == 1
        assert sample(hive, "sessionhive_session_failures_total") == 1


def test_a_failed_session_can_still_be_destroyed(tmp_path: Path, workspace: Path, crashing: set[str]) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    with Hive.start(
        store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace, restart_limit=1
    ) as hive:
        hive.create_session(BROKEN)
        for attempt in (1, 2):
            with pytest.raises(TurnFailed):
                hive.generate(BROKEN, f"look {attempt}")
        with pytest.raises(SessionFailed):
            hive.generate(BROKEN, "look 3")
        assert sample(hive, "sessionhive_session_failures_total") == 1
        hive.destroy_session(BROKEN)
        assert BROKEN not in hive.list_sessions()
        with pytest.raises(SessionNotFound):
            hive.history(BROKEN)
        with pytest.raises(SessionNotFound):
            hive.reset_session(BROKEN)
    # Gone from the store too.
    with Hive.start(store=store, llm=ScriptedLlm(tool_loop_script), workspace=workspace) as hive:
        assert BROKEN not in hive.list_sessions()


def test_crashes_spread_wider_than_the_window_keep_being_restarted(
    workspace: Path, crashing: set[str]
) -> None:
    """With a window shorter than the time between crashes, no crash counts against the next."""
    with Hive.start(
        store="memory",
        llm=ScriptedLlm(tool_loop_script),
        workspace=workspace,
        restart_limit=1,
        restart_window=1e-6,
    ) as hive:
        hive.create_session(BROKEN)
        for attempt in range(1, 6):
            with pytest.raises(TurnFailed, match="crashed"):
                hive.generate(BROKEN, f"look {attempt}")
        hive.history(BROKEN)  # waits for the last restart
        assert lifecycle(hive, "restarted") == 5
        assert sample(hive, "sessionhive_session_failures_total") == 0
        crashing.clear()
        assert hive.reset_session(BROKEN) is False
        assert hive.generate(BROKEN, "look healed").text.startswith("done:")


@pytest.mark.parametrize("backend", ["asyncio", "pooled", "threads"])
def test_a_crash_logs_no_error_from_the_abandoned_turn(
    workspace: Path, crashing: set[str], caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    """The crashed actor's turn is abandoned; its last events must not raise in asyncio callbacks."""
    with Hive.start(
        store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace, actor_backend=backend
    ) as hive:
        hive.create_session(BROKEN)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for attempt in range(1, 4):
                with pytest.raises(TurnFailed, match="crashed"):
                    hive.generate(BROKEN, f"look {attempt}")
                hive.history(BROKEN)  # the restarted actor answers
            crashing.clear()
            hive.reset_session(BROKEN)
            hive.generate(BROKEN, "look healed")
    callbacks = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert callbacks == []


def test_restart_limit_one_through_async_hive(workspace: Path, crashing: set[str]) -> None:
    async def main() -> None:
        async with AsyncHive.start(
            store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace, restart_limit=1
        ) as hive:
            await hive.create_session(BROKEN)
            await hive.create_session("healthy")
            with pytest.raises(TurnFailed, match="injected handler bug #1"):
                await hive.generate(BROKEN, "look")
            await hive.history(BROKEN)  # answered by the restarted actor
            with pytest.raises(TurnFailed, match="injected handler bug #2"):
                await hive.generate(BROKEN, "look again")
            with pytest.raises(SessionFailed, match="injected handler bug #2"):
                await hive.generate(BROKEN, "look once more")
            with pytest.raises(SessionFailed):
                await hive.history(BROKEN)
            assert (await hive.generate("healthy", "look")).text.startswith("done:")
            registry = hive.metrics.registry
            assert registry.get_sample_value("sessionhive_session_failures_total") == 1
            restarted = registry.get_sample_value(
                "sessionhive_session_lifecycle_total", {"event": "restarted"}
            )
            assert restarted == 1
            crashing.clear()
            assert await hive.reset_session(BROKEN) is True
            assert await hive.reset_session("healthy") is False
            assert (await hive.generate(BROKEN, "look healed")).text.startswith("done:")

    asyncio.run(main())
