"""Shared fixtures: Hives on real stores, scripted models, and the PostgreSQL test database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionhive import Hive, Message, Reply, ScriptedLlm, ToolCall

PG_URL = os.environ.get("SESSIONHIVE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def tool_loop_script(messages: list[Message]) -> Reply:
    """A deterministic agent: a prompt starting with 'write' asks to write a file
    (which needs confirmation by default), any other prompt lists the workspace;
    after a tool result it answers with text."""
    last = messages[-1]
    if last.role == "tool":
        return Reply(text=f"done: {last.text[:40]}")
    prompt = last.text
    if prompt.startswith("write"):
        return Reply("writing", [ToolCall("write_file", {"path": "out.txt", "content": prompt})])
    return Reply("looking", [ToolCall("list_dir", {"path": "."})])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture(params=["asyncio", "pooled", "threads"])
def actor_backend(request: pytest.FixtureRequest) -> str:
    """Both actor backends: every test that takes a ``hive`` runs on each."""
    backend: str = request.param
    return backend


@pytest.fixture
def hive(workspace: Path, actor_backend: str) -> Iterator[Hive]:
    with Hive.start(
        store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace, actor_backend=actor_backend
    ) as started:
        yield started


def pg_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(PG_URL)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {exc}"
    return None
