"""The reference session manager, ported to Python as it is: shared state behind readers-writer locks.

``LockedSessionManager`` is a faithful port of ``SessionManager`` in
``reference/session_manager.rs.txt`` (tokio ``RwLock``s and background
tasks), kept as the baseline that ``bench/bench_vs_locked.py`` measures
sessionhive against. It is deliberately *not* sessionhive's design: it exists
to show what the shared-lock design costs, and it keeps the reference's
races. Do not use it for anything else.

What is ported, and how
-----------------------
- ``sessions``: a dict ``id -> (RwLock, Session)`` behind a manager-wide
  :class:`RwLock`; likewise ``session_storage_types``, ``llm_configs`` and
  ``ongoing_operations``, each a dict behind its own lock, as in the reference.
- :class:`RwLock` is a threading port of ``tokio::sync::RwLock``, which is
  fair: once a writer waits, new readers queue behind it.
- ``generate``: read-lock the session to copy its history and settings, run
  the agent loop with no lock held, write-lock to replace ``messages`` with
  the loop's result and add usage, then ``persist_in_background``.
- ``persist_in_background``: a task on a thread pool (the tokio runtime's
  ``spawn``) that runs ``save_session``: it takes the storage-type lock, the
  stores lock, the map lock, then holds the session's *read* lock for the
  whole write, exactly as the Rust ``save_session`` keeps its guard alive
  across ``store.save(&data).await``.
- :class:`FileSessionStore` writes the *whole* session, every message, as one
  JSON file ``<dir>/<id>.json`` on every save (through a temporary file and
  a rename; no fsync, which only flatters the baseline).
- Control calls take the locks the reference takes: ``history``,
  ``confirm_tool``, ``context_usage`` read-lock the session; ``pause_session``
  and ``resume_session`` write-lock it, then persist in the background.
- The agent loop is a synchronous port of the reference's ``AgentLoop``
  (LLM, then tools, until the LLM answers without tool calls), running in
  the caller's thread. It calls the *same* objects as sessionhive: the LLM
  client (:class:`~sessionhive.ScriptedLlm`) and the
  :class:`~sessionhive.ToolExecutor`, whose coroutines run on an event loop
  owned by the calling thread. A tool the confirmation policy names waits
  for ``confirm_tool`` after a ``ConfirmationRequired`` event on the
  session's broadcast (subscribe with :meth:`LockedSessionManager.subscribe`).
- Not ported: ``generate_streaming`` (its persistence path is the same as
  ``generate``'s; a Python thread cannot be aborted like a tokio task),
  compaction with an LLM (the benchmark never compacts), hooks, planning.

The races it keeps (documented, not fixed)
------------------------------------------
1. **Lost turns.** ``generate`` copies the history under a read lock,
   releases it for the whole turn, and *replaces* ``messages`` with its own
   result under the write lock. Two overlapping turns of one session both
   start from the same history; the one that finishes last overwrites the
   other's messages, which are lost (in memory and on disk). Nothing in the
   manager serializes turns of a session. (The benchmark runs one turn per
   session at a time, so it never triggers this.)
2. **Destroyed sessions come back.** ``destroy_session`` removes the session
   from the map and deletes its file, but a background save that fetched
   the session before the removal still holds it and writes the file
   *after* the delete: the destroyed session reappears at the next
   ``load_all_sessions``.
3. **One whole-file rewrite per change, in no particular order.** Each
   change spawns its own background save and nothing orders them. Because
   the reference holds the session's read lock across the file write, a
   save cannot straddle an in-memory change, so the file still ends at the
   newest state; but saves of one session race on the file (here the last
   ``rename`` wins), every one of them rewrites the whole history, and one
   that fails is only logged (``persist_or_warn``): the file then stays
   stale, silently, until the next change.
4. ``configure`` updates the session, releases its lock, and only then
   records the new LLM config for persistence: a save in between writes the
   new model with the old config.

These races are why sessionhive gives each session one owner (an actor), a
version on every snapshot, and a single writer that never lets an older
state overwrite a newer one, and orders a delete after pending saves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sessionhive.llm import LlmConfig, create_client
from sessionhive.llm.base import LlmClient, LlmRequest
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.events import AgentEvent, ConfirmationRequired
from sessionhive.model.messages import AgentResult, ContextUsage, Message, ToolCall, Usage
from sessionhive.tools import ToolExecutor

__all__ = [
    "ConfirmationManager",
    "ConfirmationNotPending",
    "FileSessionStore",
    "LockedSessionManager",
    "RwLock",
    "Session",
]

log = logging.getLogger("bench.locked_manager")


class RwLock:
    """A fair readers-writer lock for threads, like ``tokio::sync::RwLock``.

    Any number of readers, or one writer. A writer that waits blocks readers
    that come after it, so writers are not starved (tokio's lock is FIFO).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class ConfirmationNotPending(LookupError):
    """``confirm_tool`` named a tool call that does not wait (the reference returns an error)."""


@dataclass
class _Waiting:
    done: threading.Event = field(default_factory=threading.Event)
    approved: bool = False
    reason: str | None = None


class ConfirmationManager:
    """The reference's HITL confirmation manager: pending tool calls behind their own lock."""

    def __init__(self, session_id: str, policy: ConfirmationPolicy, broadcast: _Broadcast) -> None:
        self.session_id = session_id
        self._policy = policy
        self._broadcast = broadcast
        self._lock = threading.Lock()  # the reference's RwLock<HashMap<..>> around pending calls
        self._pending: dict[str, _Waiting] = {}

    def policy(self) -> ConfirmationPolicy:
        with self._lock:
            return self._policy

    def set_policy(self, policy: ConfirmationPolicy) -> None:
        with self._lock:
            self._policy = policy

    def requires(self, tool_name: str) -> bool:
        return self.policy().requires(tool_name)

    def request(self, call: ToolCall, arguments: dict[str, Any]) -> tuple[bool, str | None]:
        """Announce the call, then block until confirmed, rejected, cancelled or timed out."""
        waiting = _Waiting()
        policy = self.policy()
        with self._lock:
            self._pending[call.id] = waiting
        self._broadcast.send(
            ConfirmationRequired(self.session_id, call.id, call.name, arguments, policy.timeout_s)
        )
        if not waiting.done.wait(policy.timeout_s):
            with self._lock:
                self._pending.pop(call.id, None)
            return policy.on_timeout == "approve", "no answer in time"
        return waiting.approved, waiting.reason

    def confirm(self, tool_id: str, approved: bool, reason: str | None) -> bool:
        with self._lock:
            waiting = self._pending.pop(tool_id, None)
        if waiting is None:
            raise ConfirmationNotPending(
                f"no pending confirmation {tool_id!r} in session {self.session_id!r}"
            )
        waiting.approved, waiting.reason = approved, reason
        waiting.done.set()
        return True

    def cancel_all(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.approved, waiting.reason = False, "cancelled"
            waiting.done.set()
        return len(pending)


class _Broadcast:
    """``tokio::sync::broadcast``: every subscriber gets every event; sending never blocks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[AgentEvent], None]] = []

    def subscribe(self, callback: Callable[[AgentEvent], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def send(self, event: AgentEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(event)


@dataclass
class Session:
    """The reference's ``Session``: plain mutable state, guarded by the lock around it."""

    id: str
    config: SessionConfig
    confirmation_manager: ConfirmationManager
    event_tx: _Broadcast
    messages: list[Message] = field(default_factory=list)
    state: str = "active"
    total_usage: Usage = Usage()
    context_usage: ContextUsage = ContextUsage()
    llm_client: LlmClient | None = None
    thinking_enabled: bool = False
    thinking_budget: int | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def parent_id(self) -> str | None:
        parent = self.config.metadata.get("parent_id")
        return parent if isinstance(parent, str) else None

    def pause(self) -> bool:
        if self.state == "paused":
            return False
        self.state = "paused"
        return True

    def resume(self) -> bool:
        if self.state != "paused":
            return False
        self.state = "active"
        return True

    def update_usage(self, usage: Usage) -> None:
        self.total_usage = self.total_usage + usage
        self.context_usage = ContextUsage(usage.prompt_tokens, self.context_usage.max_tokens)
        self.updated_at = time.time()

    def to_session_data(self, llm_config: dict[str, Any] | None) -> dict[str, Any]:
        """``SessionData``: everything, every message included, never an API key."""
        return {
            "id": self.id,
            "config": self.config.to_dict(),
            "state": self.state,
            "messages": [m.to_dict() for m in self.messages],
            "context_usage": self.context_usage.to_dict(),
            "total_usage": self.total_usage.to_dict(),
            "confirmation_policy": self.confirmation_manager.policy().to_dict(),
            "thinking_enabled": self.thinking_enabled,
            "thinking_budget": self.thinking_budget,
            "llm_config": llm_config,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class FileSessionStore:
    """One JSON file per session, rewritten whole on every save.

    :attr:`bytes_written` and :attr:`saves` count what :meth:`save` wrote, for
    the benchmark.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._counter_lock = threading.Lock()
        self._tmp_seq = 0
        self.bytes_written = 0
        self.saves = 0

    def path(self, session_id: str) -> Path:
        return self.dir / f"{session_id}.json"

    def save(self, data: dict[str, Any]) -> None:
        body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        with self._counter_lock:
            self._tmp_seq += 1
            tmp = self.dir / f".{data['id']}.{self._tmp_seq}.tmp"
            self.bytes_written += len(body)
            self.saves += 1
        tmp.write_bytes(body)
        os.replace(tmp, self.path(data["id"]))

    def load(self, session_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.path(session_id).read_bytes())
        except FileNotFoundError:
            return None
        return data

    def delete(self, session_id: str) -> None:
        try:
            self.path(session_id).unlink()
        except FileNotFoundError:
            pass

    def list(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json"))


@dataclass
class _Entry:
    lock: RwLock
    session: Session


_thread_loops = threading.local()
_all_loops: list[asyncio.AbstractEventLoop] = []
_all_loops_lock = threading.Lock()


def _run(coro: Any) -> Any:
    """Run a coroutine on the calling thread's own event loop (the port's stand-in for ``.await``)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_thread_loops, "loop", None)
    if loop is None:
        loop = asyncio.new_event_loop()
        _thread_loops.loop = loop
        with _all_loops_lock:
            _all_loops.append(loop)
    return loop.run_until_complete(coro)


def close_thread_loops() -> None:
    """Close the event loops of threads that ran turns (call once those threads are done)."""
    with _all_loops_lock:
        loops = list(_all_loops)
        _all_loops.clear()
    for loop in loops:
        if not loop.is_running():
            loop.close()


class LockedSessionManager:
    """The reference ``SessionManager``, ported with its locks and its races (see the module docstring).

    ``store_dir`` enables file persistence (``with_persistence``); without it
    sessions live in memory only (``new``). ``background_workers`` threads
    run the background saves (tokio's runtime would). The same method names
    as the reference (and as :class:`sessionhive.Hive`) take the same locks.
    """

    def __init__(
        self,
        llm_client: LlmClient | None,
        tool_executor: ToolExecutor,
        store_dir: str | os.PathLike[str] | None = None,
        *,
        background_workers: int = 32,
    ) -> None:
        self._sessions: dict[str, _Entry] = {}
        self._sessions_lock = RwLock()
        self._llm_client = llm_client
        self._tool_executor = tool_executor
        self._stores: dict[str, FileSessionStore] = {}
        self._stores_lock = RwLock()
        if store_dir is not None:
            self._stores["file"] = FileSessionStore(store_dir)
        self._storage_types: dict[str, str] = {}
        self._storage_types_lock = RwLock()
        self._llm_configs: dict[str, dict[str, Any]] = {}
        self._llm_configs_lock = RwLock()
        self._ongoing: dict[str, Callable[[], None]] = {}
        self._ongoing_lock = RwLock()
        self._background = concurrent.futures.ThreadPoolExecutor(
            max_workers=background_workers, thread_name_prefix="locked-persist"
        )
        self._outstanding = 0
        self._outstanding_cond = threading.Condition()
        self.persist_failures = 0

    @property
    def store(self) -> FileSessionStore | None:
        return self._stores.get("file")

    # ------------------------------------------------------------------ persistence

    def _save_session(self, session_id: str) -> None:
        with self._storage_types_lock.read():
            storage_type = self._storage_types.get(session_id)
        if storage_type is None or storage_type == "memory":
            return
        with self._stores_lock.read():
            store = self._stores.get(storage_type)
            if store is None:
                return
            entry = self.get_session(session_id)
            with entry.lock.read():  # held across the write, as the Rust guard is
                with self._llm_configs_lock.read():
                    llm_config = self._llm_configs.get(session_id)
                data = entry.session.to_session_data(llm_config)
                store.save(data)

    def _persist_or_warn(self, session_id: str, operation: str) -> None:
        try:
            self._save_session(session_id)
        except Exception as exc:
            self.persist_failures += 1
            log.warning("failed to persist session %s after %s: %s", session_id, operation, exc)
        finally:
            with self._outstanding_cond:
                self._outstanding -= 1
                if not self._outstanding:
                    self._outstanding_cond.notify_all()

    def persist_in_background(self, session_id: str, operation: str) -> None:
        with self._outstanding_cond:
            self._outstanding += 1
        self._background.submit(self._persist_or_warn, session_id, operation)

    def wait_for_background(self, timeout: float | None = None) -> bool:
        """Wait until every background save ran. Not in the reference: the benchmark needs a barrier."""
        with self._outstanding_cond:
            return self._outstanding_cond.wait_for(lambda: self._outstanding == 0, timeout)

    def shutdown(self) -> None:
        """Wait for the background saves, stop their threads, close the turn threads' event loops."""
        self.wait_for_background()
        self._background.shutdown(wait=True)
        close_thread_loops()

    # ------------------------------------------------------------------ sessions

    def get_session(self, session_id: str) -> _Entry:
        with self._sessions_lock.read():
            entry = self._sessions.get(session_id)
        if entry is None:
            raise KeyError(f"Session not found: {session_id}")
        return entry

    def _new_session(self, session_id: str, config: SessionConfig) -> Session:
        broadcast = _Broadcast()
        policy = config.confirmation_policy or ConfirmationPolicy()
        session = Session(session_id, config, ConfirmationManager(session_id, policy, broadcast), broadcast)
        if config.max_context_length > 0:
            session.context_usage = ContextUsage(0, config.max_context_length)
        return session

    def create_session(self, session_id: str, config: SessionConfig | None = None) -> str:
        config = config or SessionConfig()
        with self._storage_types_lock.write():
            self._storage_types[session_id] = "memory" if config.storage == "memory" else "file"
        session = self._new_session(session_id, config)
        with self._sessions_lock.write():
            self._sessions[session_id] = _Entry(RwLock(), session)
        self.persist_in_background(session_id, "create")
        return session_id

    def create_child_session(self, parent_id: str, child_id: str, config: SessionConfig | None = None) -> str:
        config = config or SessionConfig()
        parent = self.get_session(parent_id)
        with parent.lock.read():
            if config.confirmation_policy is None:
                config = replace(config, confirmation_policy=parent.session.confirmation_manager.policy())
            parent_llm = parent.session.llm_client
        config = replace(config, metadata={**config.metadata, "parent_id": parent_id})
        with self._storage_types_lock.write():
            self._storage_types[child_id] = "memory" if config.storage == "memory" else "file"
        session = self._new_session(child_id, config)
        if session.llm_client is None:
            session.llm_client = parent_llm or self._llm_client
        with self._sessions_lock.write():
            self._sessions[child_id] = _Entry(RwLock(), session)
        self.persist_in_background(child_id, "create_child")
        return child_id

    def destroy_session(self, session_id: str) -> None:
        with self._storage_types_lock.read():
            storage_type = self._storage_types.get(session_id)
        with self._sessions_lock.write():
            self._sessions.pop(session_id, None)
        with self._llm_configs_lock.write():
            self._llm_configs.pop(session_id, None)
        with self._storage_types_lock.write():
            self._storage_types.pop(session_id, None)
        if storage_type is not None and storage_type != "memory":
            with self._stores_lock.read():
                store = self._stores.get(storage_type)
                if store is not None:
                    store.delete(session_id)

    def get_child_sessions(self, parent_id: str) -> list[str]:
        with self._sessions_lock.read():
            children = []
            for session_id, entry in self._sessions.items():
                with entry.lock.read():
                    if entry.session.parent_id == parent_id:
                        children.append(session_id)
        return children

    def session_count(self) -> int:
        with self._sessions_lock.read():
            return len(self._sessions)

    def subscribe(self, session_id: str, callback: Callable[[AgentEvent], None]) -> None:
        """Receive the session's broadcast events (ConfirmationRequired among them)."""
        entry = self.get_session(session_id)
        with entry.lock.read():
            entry.session.event_tx.subscribe(callback)

    # ------------------------------------------------------------------ turns

    def generate(self, session_id: str, prompt: str) -> AgentResult:
        entry = self.get_session(session_id)
        with entry.lock.read():
            if entry.session.state == "paused":
                raise RuntimeError(f"Session {session_id} is paused. Call Resume before generating.")
        with entry.lock.read():
            session = entry.session
            history = list(session.messages)
            system = session.config.system_prompt
            session_llm = session.llm_client
            confirmation = session.confirmation_manager
            workspace = session.config.workspace
            max_rounds = session.config.max_tool_rounds
        llm = session_llm or self._llm_client
        if llm is None:
            raise RuntimeError(f"LLM client not configured for session {session_id}.")
        result = _AgentLoop(llm, self._tool_executor, workspace, system, confirmation, max_rounds).execute(
            session_id, history, prompt
        )
        with entry.lock.write():
            entry.session.messages = list(result.messages)
            entry.session.update_usage(result.usage)
        self.persist_in_background(session_id, "generate")
        self.maybe_auto_compact(session_id)
        return result

    def maybe_auto_compact(self, session_id: str) -> bool:
        entry = self.get_session(session_id)
        with entry.lock.read():
            session = entry.session
            if not session.config.auto_compact:
                return False
            should = session.context_usage.percent >= session.config.auto_compact_threshold
        if not should:
            return False
        self.compact(session_id)
        return True

    def compact(self, session_id: str) -> None:
        """Truncate to the last 20 messages (the reference's path without an LLM)."""
        entry = self.get_session(session_id)
        with entry.lock.write():
            if len(entry.session.messages) > 20:
                entry.session.messages = entry.session.messages[-20:]
        self.persist_in_background(session_id, "compact")

    # ------------------------------------------------------------------ control calls

    def history(self, session_id: str) -> list[Message]:
        entry = self.get_session(session_id)
        with entry.lock.read():
            return list(entry.session.messages)

    def context_usage(self, session_id: str) -> ContextUsage:
        entry = self.get_session(session_id)
        with entry.lock.read():
            return entry.session.context_usage

    def clear(self, session_id: str) -> None:
        entry = self.get_session(session_id)
        with entry.lock.write():
            entry.session.messages = []
        self.persist_in_background(session_id, "clear")

    def pause_session(self, session_id: str) -> bool:
        entry = self.get_session(session_id)
        with entry.lock.write():
            paused = entry.session.pause()
        if paused:
            self.persist_in_background(session_id, "pause")
        return paused

    def resume_session(self, session_id: str) -> bool:
        entry = self.get_session(session_id)
        with entry.lock.write():
            resumed = entry.session.resume()
        if resumed:
            self.persist_in_background(session_id, "resume")
        return resumed

    def confirm_tool(self, session_id: str, tool_id: str, approved: bool, reason: str | None = None) -> bool:
        entry = self.get_session(session_id)
        with entry.lock.read():
            return entry.session.confirmation_manager.confirm(tool_id, approved, reason)

    def cancel_operation(self, session_id: str) -> bool:
        entry = self.get_session(session_id)
        with entry.lock.read():
            cancelled = entry.session.confirmation_manager.cancel_all()
        with self._ongoing_lock.write():
            abort = self._ongoing.pop(session_id, None)
        if abort is not None:
            abort()
            return True
        return cancelled > 0

    def set_confirmation_policy(self, session_id: str, policy: ConfirmationPolicy) -> ConfirmationPolicy:
        entry = self.get_session(session_id)
        with entry.lock.read():
            entry.session.confirmation_manager.set_policy(policy)
        with entry.lock.write():
            entry.session.config = replace(entry.session.config, confirmation_policy=policy)
        self.persist_in_background(session_id, "set_confirmation_policy")
        return policy

    def get_confirmation_policy(self, session_id: str) -> ConfirmationPolicy:
        entry = self.get_session(session_id)
        with entry.lock.read():
            return entry.session.confirmation_manager.policy()

    def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
    ) -> None:
        entry = self.get_session(session_id)
        with entry.lock.write():
            if thinking is not None:
                entry.session.thinking_enabled = thinking
            if budget is not None:
                entry.session.thinking_budget = budget
            if model_config is not None:
                entry.session.llm_client = create_client(model_config)
        # As in the reference: recorded for persistence only after the session lock is released.
        if model_config is not None:
            with self._llm_configs_lock.write():
                self._llm_configs[session_id] = model_config.to_dict()  # never the API key
        self.persist_in_background(session_id, "configure")


class _AgentLoop:
    """A synchronous port of the reference's ``AgentLoop::execute_with_session``."""

    def __init__(
        self,
        llm: LlmClient,
        tools: ToolExecutor,
        workspace: str | None,
        system: str | None,
        confirmation: ConfirmationManager,
        max_rounds: int,
    ) -> None:
        self._llm = llm
        self._tools = tools
        self._workspace = workspace
        self._system = system
        self._confirmation = confirmation
        self._max_rounds = max_rounds

    def execute(self, session_id: str, history: list[Message], prompt: str) -> AgentResult:
        messages = [*history, Message.user(prompt)]
        definitions = tuple(self._tools.definitions())
        usage = Usage()
        calls_made: list[ToolCall] = []
        text = ""
        for rounds in range(1, self._max_rounds + 1):
            request = LlmRequest(session_id, self._system, tuple(messages), definitions)
            response = _run(self._llm.complete(request))
            usage = usage + response.usage
            text = response.text
            messages.append(Message.assistant(response.text, tuple(response.tool_calls)))
            if not response.tool_calls:
                return AgentResult(text, list(messages), usage, list(calls_made), rounds)
            for call in response.tool_calls:
                calls_made.append(call)
                arguments = call.decoded_arguments()
                approved, reason = True, None
                if self._confirmation.requires(call.name):
                    approved, reason = self._confirmation.request(call, arguments)
                if approved:
                    result = _run(
                        self._tools.execute(
                            call.name, arguments, workspace=self._workspace, session_id=session_id
                        )
                    )
                    messages.append(Message.tool(call.id, result.output, is_error=result.is_error))
                else:
                    why = f": {reason}" if reason else ""
                    messages.append(
                        Message.tool(call.id, f"error: the user rejected this call{why}", is_error=True)
                    )
        raise RuntimeError(f"max tool rounds ({self._max_rounds}) reached in session {session_id}")
