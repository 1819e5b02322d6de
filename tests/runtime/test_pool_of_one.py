"""With one dispatcher thread for every actor, the whole system still makes progress.

No actor may block on another actor's future inside a handler: on a pool of
one thread that would deadlock at once. This drives every kind of
actor-to-actor exchange through such a pool.
"""

from __future__ import annotations

from pathlib import Path

from sessionhive import ConfirmationRequired, Hive, ScriptedLlm, SessionConfig
from sessionhive.runtime import PooledBackend
from tests.agent.test_turns import assert_valid_history
from tests.conftest import tool_loop_script


def test_everything_progresses_on_a_single_dispatcher_thread(tmp_path: Path, workspace: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    backend = PooledBackend(threads=1)
    with Hive.start(
        store=store,
        llm=ScriptedLlm(tool_loop_script),
        workspace=workspace,
        actor_backend=backend,
        max_live_sessions=2,
    ) as hive:
        for n in range(4):
            hive.create_session(f"s{n}", SessionConfig(durability="sync" if n == 0 else "batched"))
            hive.create_child_session(f"s{n}", f"s{n}/kid")
        for n in range(4):
            stream = hive.generate_streaming(f"s{n}/kid", "write something")
            for event in stream:
                if isinstance(event, ConfirmationRequired):
                    assert hive.confirm_tool(f"s{n}/kid", event.tool_id, True)
            stream.result(timeout=30)
        for turn in range(8):
            hive.generate("s0", f"look {turn}", timeout=30)
        hive.compact("s0", timeout=30)  # 32 messages: summarised by the LLM
        hive.flush(timeout=30)
        for session_id in hive.list_sessions():  # activates the passivated ones, one by one
            assert_valid_history(hive.history(session_id, timeout=30))
        assert hive.live_session_count() <= 3
        hive.destroy_session("s1", timeout=30)
        assert "s1/kid" not in hive.list_sessions()
    with Hive.start(store=store, workspace=workspace, actor_backend=PooledBackend(threads=1)) as hive:
        assert len(hive.list_sessions()) == 6
        assert len(hive.history("s0")) < 32
