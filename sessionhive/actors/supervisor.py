"""``SupervisorActor``: the registry of session actors, and the only one that creates or ends them.

It alone writes the :class:`~sessionhive.actors.directory.Directory`: which
sessions exist (live or stored), which actor holds a live one, which are
children of which, which are marked failed. The facade reads that directory
to send a call straight to a live session; only creation, activation,
passivation, destroy and crashes come through here. That makes sessions
virtual actors: a call for a stored but not live session is routed here and
activates it from the store first; a session in transition (activating,
passivating, restarting) has its calls held, in order, until the transition
ends. The supervisor never blocks on another actor: requests carry futures
whose completion comes back to it as a :class:`Continue` message.

A session actor that crashes is restarted from its last snapshot, at most
``restart_limit`` times in ``restart_window`` seconds, with a growing delay
between restarts (OTP's restart intensity); past that it is marked failed
and refuses calls with :class:`~sessionhive.SessionFailed` until
``reset_session()``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pykka

from sessionhive.actors.directory import SessionEntry
from sessionhive.actors.messages import (
    Activate,
    Continue,
    Create,
    Destroy,
    DestroyTree,
    Inheritance,
    ListSessions,
    LoadAll,
    Passivate,
    ResetSession,
    Route,
    SessionCrashed,
    SessionGone,
    Shutdown,
    ShutdownAll,
)
from sessionhive.actors.services import HiveServices
from sessionhive.actors.session import SessionActor
from sessionhive.llm import LlmClient
from sessionhive.metrics import tracing
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.errors import SessionExists, SessionFailed, SessionNotFound, StoreError
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import DEFAULT_MAX_CONTEXT, ContextUsage, Usage
from sessionhive.persistence.messages import Batch, Load
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.runtime import ActorBackend, HiveActor, Reply, complete, fail

__all__ = ["SupervisorActor"]

log = logging.getLogger("sessionhive.supervisor")


# The supervisor's messages to itself. Not in __all__, but without a leading
# underscore: HiveActor dispatches a message to ``on_<ClassName>``, and an
# ``on__Loaded`` handler reads as a typo.
@dataclass(frozen=True, slots=True)
class Loaded:
    """A session snapshot read off the supervisor's thread, handed back to activate the session."""

    session_id: str
    snapshot: SessionSnapshot | None
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class Tick:
    """Time to look for idle sessions to passivate."""


@dataclass
class _Gather:
    remaining: int
    futures: list[concurrent.futures.Future[Any]] = field(default_factory=list)


class SupervisorActor(HiveActor):
    """Spawns sessions and child sessions, and owns the session directory."""

    def __init__(
        self,
        services: HiveServices,
        backend: ActorBackend,
        stored: list[tuple[str, str | None]],
        *,
        idle_timeout: float | None = None,
        max_live_sessions: int | None = None,
        tick_interval: float = 1.0,
    ) -> None:
        super().__init__()
        self._services = services
        self._metrics = services.metrics
        self._backend = backend
        self._directory = services.directory
        self._last_used: OrderedDict[str, float] = OrderedDict()
        self._waiting: dict[str, list[Any]] = {}
        self._children: dict[str, set[str]] = {}  # the mutable twin of directory.children
        for session_id, parent_id in stored:
            self._directory.known.add(session_id)
            if parent_id is not None:
                self._link(session_id, parent_id)
        self._idle_timeout = idle_timeout
        self._max_live = max_live_sessions
        self._tick_interval = tick_interval
        self._ticker_stop = threading.Event()
        self._restarting: set[str] = set()
        self._crashes: dict[str, list[float]] = {}

    def on_receive(self, message: Any) -> Any:
        self._metrics.child(self._metrics.messages_handled, "supervisor", type(message).__name__).inc()
        return self._dispatch(message)

    def _dispatch(self, message: Any) -> Any:
        """Handle ``message`` now, from inside this actor (not counted as a mailbox message)."""
        return HiveActor.on_receive(self, message)

    def on_start(self) -> None:
        self._gauge_mailboxes()
        # The tick passivates idle sessions.
        ref = self.actor_ref
        stop = self._ticker_stop
        interval = self._tick_interval

        def tick() -> None:
            # Only tells: the timer thread never touches supervisor state.
            while not stop.wait(interval):
                try:
                    ref.tell(Tick())
                except pykka.ActorDeadError:
                    return

        threading.Thread(target=tick, name="sessionhive-supervisor-tick", daemon=True).start()

    def on_stop(self) -> None:
        self._ticker_stop.set()

    # ------------------------------------------------------------------ helpers

    def _link(self, child: str, parent: str) -> None:
        self._directory.parents[child] = parent
        siblings = self._children.setdefault(parent, set())
        siblings.add(child)
        self._directory.children[parent] = frozenset(siblings)

    def _unlink(self, session_id: str) -> None:
        parent = self._directory.parents.pop(session_id, None)
        if parent is None:
            return
        siblings = self._children.get(parent)
        if siblings is not None:
            siblings.discard(session_id)
            if siblings:
                self._directory.children[parent] = frozenset(siblings)
            else:
                del self._children[parent]
                self._directory.children.pop(parent, None)

    def _later(
        self, future: concurrent.futures.Future[Any], then: Callable[[concurrent.futures.Future[Any]], None]
    ) -> None:
        """Run ``then(future)`` inside this actor once ``future`` completes (never blocks)."""
        ref = self.actor_ref
        future.add_done_callback(lambda done: ref.tell(Continue(lambda: then(done))))

    def _gather(
        self,
        futures: list[concurrent.futures.Future[Any]],
        then: Callable[[list[concurrent.futures.Future[Any]]], None],
    ) -> None:
        if not futures:
            then([])
            return
        state = _Gather(len(futures), futures)

        def one_done(_done: concurrent.futures.Future[Any]) -> None:
            state.remaining -= 1  # runs inside the actor: one writer
            if state.remaining == 0:
                then(state.futures)

        for future in futures:
            self._later(future, one_done)

    def _hold(self, session_id: str, message: Any) -> bool:
        waiting = self._waiting.get(session_id)
        if waiting is None:
            return False
        waiting.append(message)
        return True

    def _release(self, session_id: str) -> None:
        for message in self._waiting.pop(session_id, []):
            self._dispatch(message)

    def _set_live_gauge(self) -> None:
        self._metrics.live_sessions.set(len(self._directory.live))

    def _spawn(
        self,
        snapshot: SessionSnapshot,
        *,
        llm_client: LlmClient | None = None,
        inherited: LlmConfig | None = None,
        created: Reply | None = None,
    ) -> SessionEntry:
        session_id = snapshot.session_id
        entry = SessionEntry(session_id)
        # Published before the actor exists: a new session answers its
        # creator from its constructor, and the creator's next read must
        # find it (a call meanwhile, seeing no ref yet, comes through here).
        self._directory.known.add(session_id)
        if snapshot.parent_id is not None:
            self._link(session_id, snapshot.parent_id)
        self._directory.live[session_id] = entry
        entry.ref = self._backend.spawn(
            SessionActor, self._services, self.actor_ref, entry, snapshot, llm_client, inherited, created
        )
        self._last_used[session_id] = time.monotonic()
        self._set_live_gauge()
        self._enforce_max_live()
        return entry

    def _drop_live(self, session_id: str) -> None:
        self._directory.live.pop(session_id, None)
        self._last_used.pop(session_id, None)
        self._set_live_gauge()

    # ------------------------------------------------------------------ routing

    def on_Route(self, message: Route) -> None:
        session_id = message.session_id
        if self._hold(session_id, message):
            return
        failed = self._directory.failed.get(session_id)
        if failed is not None:
            fail(message.call.reply, SessionFailed(session_id, failed))
            return
        entry = self._directory.live.get(session_id)
        if entry is None:
            # Not live: load it. An id this Hive has never seen is looked up
            # too: another Hive on the same store (a cluster shard) may have
            # created it since this one read the index.
            self._activate(session_id)
            self._waiting[session_id].append(message)
            return
        self._last_used[session_id] = time.monotonic()
        self._last_used.move_to_end(session_id)
        assert entry.ref is not None
        try:
            entry.ref.tell(message.call)
        except pykka.ActorDeadError:
            # Stopped without our knowing yet: its report (gone or crashed)
            # is on its way and releases the calls held meanwhile.
            self._waiting[session_id] = [message]

    def _activate(self, session_id: str) -> None:
        self._waiting[session_id] = []
        ref = self.actor_ref

        def on_loaded(snapshot: SessionSnapshot | None, error: BaseException | None) -> None:
            ref.tell(Loaded(session_id, snapshot, error))

        tracing.activation_begins(session_id)
        self._services.persistence.send(Load(session_id, on_loaded))

    def on_Loaded(self, message: Loaded) -> None:
        session_id = message.session_id
        restarting = session_id in self._restarting
        self._restarting.discard(session_id)
        tracing.activation_ends(session_id, message.snapshot is not None)
        if message.error is not None or message.snapshot is None:
            held = self._waiting.pop(session_id, [])
            if message.error is None:
                self._forget(session_id)
                error: BaseException = SessionNotFound(session_id)
            else:
                error = StoreError(f"cannot load session {session_id!r} from the store: {message.error}")
            for held_message in held:
                if isinstance(held_message, Route):
                    fail(held_message.call.reply, error)
                elif isinstance(held_message, Create):
                    self._dispatch(held_message)  # not there after all: creating is fine
                else:
                    fail(held_message.reply, error)
            return
        if not restarting:
            self._metrics.session_lifecycle.labels("activated").inc()
        self._spawn(message.snapshot)
        self._release(session_id)

    def _forget(self, session_id: str) -> None:
        self._directory.known.discard(session_id)
        self._directory.failed.pop(session_id, None)
        self._crashes.pop(session_id, None)
        self._unlink(session_id)
        for child in self._children.pop(session_id, set()):
            self._directory.parents.pop(child, None)
        self._directory.children.pop(session_id, None)

    # ------------------------------------------------------------------ lifecycle

    def on_Create(self, message: Create) -> None:
        session_id, parent_id = message.session_id, message.parent_id
        if self._hold(session_id, message):
            return
        if session_id in self._directory.live or session_id in self._directory.known:
            if message.exist_ok:
                complete(message.reply, session_id)
            else:
                fail(message.reply, SessionExists(session_id))
            return
        if parent_id is None:
            snapshot = _new_snapshot(session_id, None, message.config)
            self._spawn(snapshot, created=message.reply)
            self._metrics.child(self._metrics.session_lifecycle, "created").inc()
            return
        if parent_id not in self._directory.live and parent_id not in self._directory.known:
            fail(message.reply, SessionNotFound(parent_id))
            return
        # Reserve the child id while the parent answers what the child inherits.
        self._waiting[session_id] = []
        inheritance: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._dispatch(Route(parent_id, Inheritance(inheritance)))
        self._later(inheritance, lambda done: self._finish_child(message, done))

    def _finish_child(self, message: Create, inheritance: concurrent.futures.Future[Any]) -> None:
        error = inheritance.exception()
        if error is not None:
            fail(message.reply, error)
        elif message.parent_id not in self._directory.known:
            fail(message.reply, SessionNotFound(message.parent_id or ""))
        else:
            policy, client, llm_config = inheritance.result()
            config = message.config
            if config.confirmation_policy is None:
                config = replace(config, confirmation_policy=policy)
            snapshot = _new_snapshot(message.session_id, message.parent_id, config, llm_config)
            self._spawn(snapshot, llm_client=client, inherited=llm_config, created=message.reply)
            self._metrics.session_lifecycle.labels("created").inc()
        self._release(message.session_id)

    def on_DestroyTree(self, message: DestroyTree) -> None:
        root = message.session_id
        if self._hold(root, message):
            return
        if root not in self._directory.live and root not in self._directory.known:
            fail(message.reply, SessionNotFound(root))
            return
        order: list[str] = []

        def visit(session_id: str) -> None:
            for child in sorted(self._children.get(session_id, ())):
                visit(child)
            order.append(session_id)

        visit(root)
        futures: list[concurrent.futures.Future[Any]] = []
        for session_id in order:
            self._directory.failed.pop(session_id, None)  # a failed session can still be destroyed
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()
            futures.append(done)
            self._dispatch(Route(session_id, Destroy(done)))

        def all_done(results: list[concurrent.futures.Future[Any]]) -> None:
            errors = [f.exception() for f in results if f.exception() is not None]
            real = [e for e in errors if not isinstance(e, SessionNotFound)]
            if real:
                fail(message.reply, real[0])
            else:
                complete(message.reply, None)

        self._gather(futures, all_done)

    def on_SessionGone(self, message: SessionGone) -> None:
        session_id = message.session_id
        entry = self._directory.live.get(session_id)
        if entry is not None and entry.ref is message.ref:
            self._drop_live(session_id)
        if message.reason == "destroyed":
            self._forget(session_id)
            self._metrics.session_lifecycle.labels("destroyed").inc()
        else:
            self._metrics.session_lifecycle.labels("passivated").inc()
        self._release(session_id)

    def on_SessionCrashed(self, message: SessionCrashed) -> None:
        session_id = message.session_id
        entry = self._directory.live.get(session_id)
        if entry is None or entry.ref is not message.ref:
            return  # an older incarnation's report
        self._drop_live(session_id)
        now = time.monotonic()
        window = self._services.restart_window
        recent = [t for t in self._crashes.get(session_id, []) if now - t < window]
        recent.append(now)
        self._crashes[session_id] = recent
        later = self._waiting.pop(session_id, [])
        if len(recent) > self._services.restart_limit:
            log.error(
                "session %s crashed %d times in %.0f s (%s); marked failed until reset_session()",
                session_id,
                len(recent),
                window,
                message.error,
            )
            self._directory.failed[session_id] = message.error
            self._metrics.session_failures.inc()
            self._metrics.session_lifecycle.labels("failed").inc()
            for held in later:
                self._dispatch(held)  # refused with SessionFailed
            return
        log.error("session %s crashed (%s); restarting it", session_id, message.error)
        self._metrics.session_lifecycle.labels("restarted").inc()
        self._waiting[session_id] = later
        delay = 0.0 if len(recent) == 1 else min(0.1 * 2 ** (len(recent) - 2), 5.0)
        self._after(delay, lambda: self._restart(session_id, message.snapshot))

    def _after(self, delay: float, fn: Callable[[], None]) -> None:
        if delay <= 0:
            fn()
            return
        ref = self.actor_ref
        timer = threading.Timer(delay, lambda: _tell_quietly(ref, Continue(fn)))
        timer.daemon = True
        timer.start()

    def _restart(self, session_id: str, snapshot: SessionSnapshot | None) -> None:
        if snapshot is not None:
            self._spawn(snapshot)
            self._release(session_id)
            return
        held = self._waiting.pop(session_id, [])
        self._restarting.add(session_id)
        self._activate(session_id)
        self._waiting[session_id].extend(held)

    def on_ResetSession(self, message: ResetSession) -> None:
        session_id = message.session_id
        if session_id not in self._directory.known:
            fail(message.reply, SessionNotFound(session_id))
            return
        was_failed = self._directory.failed.pop(session_id, None) is not None
        self._crashes.pop(session_id, None)
        complete(message.reply, was_failed)

    def _passivate(self, session_id: str) -> None:
        entry = self._directory.live.get(session_id)
        if entry is None or session_id in self._waiting:
            return
        answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._dispatch(Route(session_id, Passivate(answer)))

    def _enforce_max_live(self) -> None:
        if self._max_live is None or len(self._directory.live) <= self._max_live:
            return
        excess = len(self._directory.live) - self._max_live
        for session_id in list(self._last_used)[: excess * 2]:
            if excess <= 0:
                break
            if session_id not in self._waiting:
                self._passivate(session_id)
                excess -= 1

    def _gauge_mailboxes(self) -> None:
        """Mailbox depths are computed when metrics are scraped, not on every tick.

        Summing every live session's mailbox is linear in the sessions; a
        scrape comes every 15 s or so, a tick every second. The functions run
        on the scraper's thread and only read: a C-level copy of the directory
        and the length of each mailbox.
        """
        depth = self._metrics.mailbox_depth
        directory, services, own = self._directory, self._services, self.actor_ref

        def sessions() -> float:
            return sum(_inbox_depth(entry.ref) for entry in list(directory.live.values()))

        def persistence() -> float:
            backlog = services.persistence_backlog
            return _inbox_depth(services.persistence.ref) + (backlog.in_hand if backlog is not None else 0)

        depth.labels("session").set_function(sessions)
        depth.labels("supervisor").set_function(lambda: _inbox_depth(own))
        depth.labels("persistence").set_function(persistence)

    def on_Tick(self, _message: Tick) -> None:
        if self._idle_timeout is not None:
            horizon = time.monotonic() - self._idle_timeout
            stale = []
            for session_id, used in self._last_used.items():
                if used > horizon:
                    break  # ordered by last use: the rest are more recent
                stale.append(session_id)
            for session_id in stale:
                self._passivate(session_id)
        self._enforce_max_live()

    def on_Continue(self, message: Continue) -> None:
        message.fn()

    # ------------------------------------------------------------------ queries

    def on_ListSessions(self, message: ListSessions) -> None:
        complete(message.reply, sorted(self._directory.known))

    def on_LoadAll(self, message: LoadAll) -> None:
        futures: list[concurrent.futures.Future[Any]] = []
        for session_id in sorted(self._directory.known - set(self._directory.live)):
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            futures.append(future)
            self._dispatch(Route(session_id, Activate(future)))
        self._gather(
            futures, lambda done: complete(message.reply, sum(1 for f in done if f.exception() is None))
        )

    def on_ShutdownAll(self, message: ShutdownAll) -> None:
        futures: list[concurrent.futures.Future[Any]] = []
        for entry in list(self._directory.live.values()):
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()
            futures.append(done)
            assert entry.ref is not None
            try:
                entry.ref.tell(Shutdown(done))
            except pykka.ActorDeadError:
                complete(done, None)
        self._gather(futures, lambda _done: complete(message.reply, None))


def _tell_quietly(ref: pykka.ActorRef[Any], message: Any) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass  # the Hive stopped meanwhile


def _inbox_depth(ref: pykka.ActorRef[Any] | None) -> int:
    """Messages waiting in an actor's inbox, a Batch counting as the messages it carries."""
    if ref is None:
        return 0
    inbox: Any = ref.actor_inbox
    waiting = getattr(inbox, "queue", None)  # a ThreadingActor's queue.Queue
    if waiting is not None:
        # tuple(deque) copies in C without releasing the GIL: a consistent
        # look at a deque that another thread appends to.
        return sum(len(e.message.messages) if isinstance(e.message, Batch) else 1 for e in tuple(waiting))
    size = getattr(inbox, "qsize", None)
    return int(size()) if size is not None else 0


_NO_USAGE = Usage()
_DEFAULT_POLICY = ConfirmationPolicy()


def _new_snapshot(
    session_id: str, parent_id: str | None, config: SessionConfig, llm_config: LlmConfig | None = None
) -> SessionSnapshot:
    now = time.time()
    return SessionSnapshot(
        session_id=session_id,
        version=0,
        parent_id=parent_id,
        state="active",
        config=config,
        confirmation_policy=config.confirmation_policy or _DEFAULT_POLICY,
        llm_config=llm_config,
        thinking=False,
        budget=None,
        usage=_NO_USAGE,
        context_usage=ContextUsage(0, config.max_context_length or DEFAULT_MAX_CONTEXT),
        messages=(),
        history_epoch=0,
        created_at=now,
        updated_at=now,
    )
