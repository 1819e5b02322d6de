"""The plain floor of ``bench/bench_runtime.py`` keeps its word: nothing of ours, durable means committed."""

from __future__ import annotations

import ast
import asyncio
import sqlite3
from pathlib import Path

import pytest

from bench.baselines import plain_floor
from bench.baselines.plain_floor import run_plain_floor

REPO = Path(__file__).resolve().parent.parent


def committed_rows(db: Path) -> int:
    """Rows another connection sees: what a crash right now would leave."""
    with sqlite3.connect(db) as connection:
        (count,) = connection.execute("select count(*) from messages").fetchone()
    return int(count)


def make_workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "a.txt").write_text("x")
    (workspace / "src").mkdir()
    return workspace


def test_the_plain_floor_imports_nothing_from_sessionhive() -> None:
    tree = ast.parse((REPO / "bench" / "baselines" / "plain_floor.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported and not any(name.split(".")[0] in ("sessionhive", "bench") for name in imported)


@pytest.mark.parametrize("mode", plain_floor.MODES)
def test_every_turn_ends_up_committed_once(tmp_path: Path, mode: str) -> None:
    db = tmp_path / "floor.db"
    run = asyncio.run(run_plain_floor(50, 3, make_workspace(tmp_path), db, mode))
    assert run.turns == 150 and run.turns_per_s > 0
    # user, assistant asking for 2 list_dir, 2 tool results, the answer: 5 rows a turn.
    assert run.rows_committed == committed_rows(db) == 150 * 5
    with sqlite3.connect(db) as connection:
        body = connection.execute("select body from messages where seq = 2").fetchone()[0]
    assert '"role":"tool"' in body and "a.txt" in body and "src/" in body


def test_a_durable_turn_is_acknowledged_only_once_committed(tmp_path: Path) -> None:
    workspace = str(make_workspace(tmp_path).resolve())
    db = tmp_path / "floor.db"

    async def scenario() -> list[int]:
        writer = plain_floor.RowWriter(db, "durable", asyncio.get_running_loop())
        seen = []
        session: list[plain_floor.MessageDict] = []
        for turn in range(3):
            await plain_floor.run_turn(session, "s", f"turn {turn}", workspace, writer, "durable")
            seen.append(committed_rows(db))  # at the moment the turn is acknowledged
        await writer.close()
        return seen

    assert asyncio.run(scenario()) == [5, 10, 15]


def test_list_dir_stays_in_the_workspace(tmp_path: Path) -> None:
    workspace = str(make_workspace(tmp_path).resolve())
    assert plain_floor.list_dir(workspace, ".") == ("a.txt\nsrc/", False)
    output, is_error = plain_floor.list_dir(workspace, "..")
    assert is_error and "outside the workspace" in output
