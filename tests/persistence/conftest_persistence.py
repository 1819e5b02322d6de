"""Fixtures and helpers of the persistence tests (loaded with ``pytest_plugins``; merge into conftest.py).

Stores are real: SQLite files in ``tmp_path``, a fresh PostgreSQL schema per
test on the server at ``SESSIONHIVE_TEST_POSTGRES`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), JSON files, a dict.

The test modules import helpers from here before pytest loads it as a plugin,
so it opts out of assertion rewriting (it asserts nothing): PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import ContextUsage, Message, ToolCall, Usage
from sessionhive.persistence import FileStore, MemoryStore, SessionSnapshot, SessionStore, SqlStore

POSTGRES_URL = os.environ.get(
    "SESSIONHIVE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SECRET_KEY = "sk-test-SECRET-never-stored-7f3a9c"

STORE_KINDS = (
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    "file",
    "memory",
)
SQL_KINDS = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


def conversation(count: int, *, prefix: str = "m") -> tuple[Message, ...]:
    """``count`` messages cycling through user, assistant-with-tool-call and tool result."""
    messages: list[Message] = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            messages.append(Message.user(f"{prefix}{i}: please look at file_{i}.txt"))
        elif kind == 1:
            call = ToolCall("read_file", {"path": f"file_{i}.txt", "limit": i}, id=f"call_{prefix}{i}")
            messages.append(Message.assistant(f"{prefix}{i}: reading", (call,)))
        else:
            messages.append(
                Message.tool(f"call_{prefix}{i - 1}", f"{prefix}{i}: contents ✓", is_error=i % 2 == 0)
            )
    return tuple(messages)


def make_snapshot(
    session_id: str = "s1",
    version: int = 1,
    messages: int | Sequence[Message] = 3,
    *,
    epoch: int = 0,
    parent_id: str | None = None,
    state: str = "active",
    prefix: str = "m",
    metadata: dict[str, Any] | None = None,
) -> SessionSnapshot:
    """A snapshot that uses every field, with an LLM config that carries :data:`SECRET_KEY`."""
    history = conversation(messages, prefix=prefix) if isinstance(messages, int) else tuple(messages)
    return SessionSnapshot(
        session_id=session_id,
        version=version,
        parent_id=parent_id,
        state=state,  # type: ignore[arg-type]
        config=SessionConfig(
            system_prompt="You are terse.",
            workspace="/srv/work",
            max_context_length=32_000,
            auto_compact=True,
            auto_compact_threshold=0.7,
            confirmation_policy=ConfirmationPolicy(require_confirmation=("bash",), timeout_s=5.0),
            durability="sync",
            max_tool_rounds=7,
            metadata=metadata if metadata is not None else {"team": "search", "tags": ["a", "b"]},
        ),
        confirmation_policy=ConfirmationPolicy(require_confirmation="all", on_timeout="approve"),
        llm_config=LlmConfig("openai", "gpt-4o-mini", api_key=SECRET_KEY, base_url="http://llm.local/v1"),
        thinking=True,
        budget=12_000,
        usage=Usage(prompt_tokens=120 * version, completion_tokens=30 * version),
        context_usage=ContextUsage(used_tokens=900, max_tokens=32_000),
        messages=history,
        history_epoch=epoch,
        created_at=1_700_000_000.25,
        updated_at=1_700_000_000.25 + version,
    )


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_unreachable() -> str | None:
    """Why the test server cannot be reached, or ``None`` when it can."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dev dependency
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(_libpq_url(POSTGRES_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip()
    return None


def _libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture
def postgres_url(postgres_unreachable: str | None) -> Iterator[str]:
    """A URL whose connections live in a fresh, empty schema, dropped after the test."""
    if postgres_unreachable is not None:
        pytest.skip(
            f"!!! PostgreSQL at {POSTGRES_URL} is NOT REACHABLE, PostgreSQL tests skipped: "
            f"{postgres_unreachable}"
        )
    import psycopg

    schema = f"sessionhive_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_url(POSTGRES_URL), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    # libpq's "options" makes the schema the search_path of every pooled connection.
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(_libpq_url(POSTGRES_URL), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# --------------------------------------------------------------------------- stores


class StoreFactory:
    """Opens stores of one kind at one location; every store it opened is closed at teardown."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind = kind
        self.location = location
        self._opened: list[SessionStore] = []
        self._memory: MemoryStore | None = None

    @property
    def is_sql(self) -> bool:
        return self.kind in ("sqlite", "postgres")

    def open(self) -> Any:
        """A new store on the same data (the same MemoryStore for ``memory``)."""
        store: SessionStore
        if self.kind in ("sqlite", "postgres"):
            store = SqlStore(self.location)
        elif self.kind == "file":
            store = FileStore(self.location)
        else:
            if self._memory is None:
                self._memory = MemoryStore()
            store = self._memory
        self._opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=STORE_KINDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory for each kind of store: SQLite, PostgreSQL, files, memory."""
    yield from _factory(request, tmp_path)


@pytest.fixture(params=SQL_KINDS)
def sql_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory for the SQL stores only: SQLite and PostgreSQL."""
    yield from _factory(request, tmp_path)


def _factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    kind = request.param
    if kind == "sqlite":
        location = f"sqlite:///{tmp_path / 'sessions.db'}"
    elif kind == "postgres":
        location = request.getfixturevalue("postgres_url")
    elif kind == "file":
        location = str(tmp_path / "sessions")
    else:
        location = "memory"
    factory = StoreFactory(kind, location)
    yield factory
    factory.close_all()


# --------------------------------------------------------------------------- fault injection


def locked_error() -> Exception:
    """The error SQLAlchemy raises when SQLite stays locked past its busy timeout."""
    return sa_exc.OperationalError(
        "INSERT INTO sessionhive_messages ...", None, sqlite3.OperationalError("database is locked")
    )


class FaultyStore:
    """A real store whose ``write_batch`` raises ``error()`` while ``failures_left`` > 0.

    ``failures_left=None`` fails until :meth:`heal`. It records every call so
    that tests can see how the actor batched, and defines no ``is_transient``
    (the actor then falls back to its default classification).
    """

    def __init__(
        self,
        inner: SessionStore,
        *,
        failures: int | None = 0,
        error: Callable[[], Exception] = locked_error,
    ) -> None:
        self.inner = inner
        self.failures_left = failures
        self.error = error
        self.write_calls: list[tuple[list[str], list[str]]] = []
        self.attempts = 0
        self.loads = 0
        self.list_calls = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def last_write_rows(self) -> Any:
        return getattr(self.inner, "last_write_rows", {})

    def heal(self) -> None:
        self.failures_left = 0

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None:
        self.attempts += 1
        if self.failures_left is None or self.failures_left > 0:
            if self.failures_left is not None:
                self.failures_left -= 1
            raise self.error()
        self.write_calls.append(([s.session_id for s in snapshots], list(deletes)))
        self.inner.write_batch(snapshots, deletes)

    def load(self, session_id: str) -> SessionSnapshot | None:
        self.loads += 1
        return self.inner.load(session_id)

    def list_ids(self) -> list[str]:
        self.list_calls += 1
        return self.inner.list_ids()

    def health_check(self) -> None:
        self.inner.health_check()

    def close(self) -> None:
        self.inner.close()
