"""``SupervisorActor``: the registry of live session actors, and nothing else.

It alone knows which sessions exist (live or stored), which actor holds a
live one, and which sessions are children of which. Every call for a session
passes through it (``Route``), which is what makes sessions virtual actors: a
call for a stored but not live session activates it from the store first; a
session in transition (activating, passivating, being destroyed) has its calls
held, in order, until the transition ends. The supervisor never blocks on
another actor: requests carry futures whose completion comes back to it as a
``Continue`` message.
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

from sessionhive.actors.session import Call, HiveServices, SessionActor, SessionCrashed, SessionGone
from sessionhive.llm import LlmClient, LlmConfig
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.errors import SessionExists, SessionNotFound, StoreError
from sessionhive.model.messages import DEFAULT_MAX_CONTEXT, ContextUsage, Usage
from sessionhive.persistence.actor import Load
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.runtime import ActorBackend, HiveActor, complete, fail

__all__ = ["Create", "Destroy", "Notify", "Query", "Route", "Shutdown", "SupervisorActor"]

log = logging.getLogger("sessionhive.supervisor")

Reply = concurrent.futures.Future[Any]


@dataclass
class Route:
    """Deliver ``call`` to session ``session_id``, activating it first if needed."""

    session_id: str
    call: Call


@dataclass
class Notify:
    """Deliver ``message`` to ``session_id`` only if it is live (never activates it)."""

    session_id: str
    message: Any


@dataclass
class Create:
    session_id: str
    config: SessionConfig
    parent_id: str | None
    reply: Reply


@dataclass
class Destroy:
    session_id: str
    reply: Reply


@dataclass
class Query:
    """``kind`` is one of: list, count, live_count, children, load_all."""

    kind: str
    reply: Reply
    arg: str | None = None


@dataclass
class Shutdown:
    reply: Reply


@dataclass(frozen=True)
class _Loaded:
    session_id: str
    snapshot: SessionSnapshot | None
    error: BaseException | None


@dataclass(frozen=True)
class _Continue:
    fn: Callable[[], None]


@dataclass(frozen=True)
class _Tick:
    pass


@dataclass
class _Gather:
    remaining: int
    futures: list[Reply] = field(default_factory=list)


class SupervisorActor(HiveActor):
    """Spawns sessions and child sessions, and owns the id -> actor registry."""

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
        self._live: dict[str, pykka.ActorRef[Any]] = {}
        self._last_used: OrderedDict[str, float] = OrderedDict()
        self._waiting: dict[str, list[Any]] = {}
        self._known: set[str] = set()
        self._parent: dict[str, str] = {}
        self._children: dict[str, set[str]] = {}
        for session_id, parent_id in stored:
            self._known.add(session_id)
            if parent_id is not None:
                self._link(session_id, parent_id)
        self._idle_timeout = idle_timeout
        self._max_live = max_live_sessions
        self._tick_interval = tick_interval
        self._ticker_stop = threading.Event()
        self._restarting: set[str] = set()
        self._shutting_down = False

    def on_receive(self, message: Any) -> Any:
        self._metrics.child(self._metrics.messages_handled, "supervisor", type(message).__name__).inc()
        return self._dispatch(message)

    def _dispatch(self, message: Any) -> Any:
        """Handle ``message`` now, from inside this actor (not counted as a mailbox message)."""
        return HiveActor.on_receive(self, message)

    def on_start(self) -> None:
        # The tick passivates idle sessions and refreshes the mailbox-depth gauges.
        ref = self.actor_ref
        stop = self._ticker_stop
        interval = self._tick_interval

        def tick() -> None:
            # Only tells: the timer thread never touches supervisor state.
            while not stop.wait(interval):
                try:
                    ref.tell(_Tick())
                except pykka.ActorDeadError:
                    return

        threading.Thread(target=tick, name="sessionhive-supervisor-tick", daemon=True).start()

    def on_stop(self) -> None:
        self._ticker_stop.set()

    # ------------------------------------------------------------------ helpers

    def _link(self, child: str, parent: str) -> None:
        self._parent[child] = parent
        self._children.setdefault(parent, set()).add(child)

    def _unlink(self, session_id: str) -> None:
        parent = self._parent.pop(session_id, None)
        if parent is not None:
            siblings = self._children.get(parent)
            if siblings is not None:
                siblings.discard(session_id)
                if not siblings:
                    del self._children[parent]

    def _later(
        self, future: concurrent.futures.Future[Any], then: Callable[[concurrent.futures.Future[Any]], None]
    ) -> None:
        """Run ``then(future)`` inside this actor once ``future`` completes (never blocks)."""
        ref = self.actor_ref
        future.add_done_callback(lambda done: ref.tell(_Continue(lambda: then(done))))

    def _gather(self, futures: list[Reply], then: Callable[[list[Reply]], None]) -> None:
        if not futures:
            then([])
            return
        state = _Gather(len(futures), futures)

        def one_done(_done: Reply) -> None:
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

    def _spawn(
        self,
        snapshot: SessionSnapshot,
        *,
        llm_client: LlmClient | None = None,
        inherited: LlmConfig | None = None,
        created: Reply | None = None,
    ) -> pykka.ActorRef[Any]:
        ref = self._backend.spawn(
            SessionActor, self._services, self.actor_ref, snapshot, llm_client, inherited, created
        )
        self._live[snapshot.session_id] = ref
        self._last_used[snapshot.session_id] = time.monotonic()
        self._known.add(snapshot.session_id)
        if snapshot.parent_id is not None:
            self._link(snapshot.session_id, snapshot.parent_id)
        self._metrics.live_sessions.set(len(self._live))
        self._enforce_max_live()
        return ref

    # ------------------------------------------------------------------ routing

    def on_Route(self, message: Route) -> None:
        session_id = message.session_id
        if self._hold(session_id, message):
            return
        ref = self._live.get(session_id)
        if ref is None:
            if session_id not in self._known:
                fail(message.call.reply, SessionNotFound(session_id))
                return
            self._activate(session_id)
            self._waiting[session_id].append(message)
            return
        self._last_used[session_id] = time.monotonic()
        self._last_used.move_to_end(session_id)
        if message.call.op in ("destroy", "passivate"):
            self._waiting[session_id] = []  # hold later calls until SessionGone (or refusal)
        try:
            ref.tell(message.call)
        except pykka.ActorDeadError:
            # Died without telling us (its crash report is on the way, or was lost):
            # restart it from the store and deliver this call to the new actor.
            self._waiting.pop(session_id, None)
            self._restart(session_id, ref, None, (message.call,))

    def on_Notify(self, message: Notify) -> None:
        ref = self._live.get(message.session_id)
        if ref is not None:
            ref.tell(message.message)

    def _activate(self, session_id: str) -> None:
        self._waiting[session_id] = []
        ref = self.actor_ref
        persistence = self._services.persistence
        assert persistence is not None

        def on_loaded(snapshot: SessionSnapshot | None, error: BaseException | None) -> None:
            ref.tell(_Loaded(session_id, snapshot, error))

        persistence.tell(Load(session_id, on_loaded))

    def on__Loaded(self, message: _Loaded) -> None:
        session_id = message.session_id
        if message.error is not None or message.snapshot is None:
            held = self._waiting.pop(session_id, [])
            self._restarting.discard(session_id)
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
        if session_id in self._restarting:
            self._restarting.discard(session_id)
        else:
            self._metrics.session_lifecycle.labels("activated").inc()
        self._spawn(message.snapshot)
        self._release(session_id)

    def _forget(self, session_id: str) -> None:
        self._known.discard(session_id)
        self._unlink(session_id)
        for child in self._children.pop(session_id, set()):
            self._parent.pop(child, None)

    # ------------------------------------------------------------------ lifecycle

    def on_Create(self, message: Create) -> None:
        session_id, parent_id = message.session_id, message.parent_id
        if self._hold(session_id, message):
            return
        if session_id in self._live or session_id in self._known:
            fail(message.reply, SessionExists(session_id))
            return
        if parent_id is None:
            snapshot = _new_snapshot(session_id, None, message.config, message.config.confirmation_policy)
            self._spawn(snapshot, created=message.reply)
            self._metrics.session_lifecycle.labels("created").inc()
            return
        if parent_id not in self._live and parent_id not in self._known:
            fail(message.reply, SessionNotFound(parent_id))
            return
        # Reserve the child id while the parent answers what the child inherits.
        self._waiting[session_id] = []
        inheritance: Reply = concurrent.futures.Future()
        self._dispatch(Route(parent_id, Call("inheritance", (), inheritance)))
        self._later(inheritance, lambda done: self._finish_child(message, done))

    def _finish_child(self, message: Create, inheritance: Reply) -> None:
        error = inheritance.exception()
        if error is not None:
            fail(message.reply, error)
        elif message.parent_id not in self._known:
            fail(message.reply, SessionNotFound(message.parent_id or ""))
        else:
            policy, client, llm_config = inheritance.result()
            config = message.config
            if config.confirmation_policy is None:
                config = _with_policy(config, policy)
            snapshot = _new_snapshot(
                message.session_id, message.parent_id, config, config.confirmation_policy, llm_config
            )
            self._spawn(snapshot, llm_client=client, inherited=llm_config, created=message.reply)
            self._metrics.session_lifecycle.labels("created").inc()
        self._release(message.session_id)

    def on_Destroy(self, message: Destroy) -> None:
        root = message.session_id
        if self._hold(root, message):
            return
        if root not in self._live and root not in self._known:
            fail(message.reply, SessionNotFound(root))
            return
        order: list[str] = []

        def visit(session_id: str) -> None:
            for child in sorted(self._children.get(session_id, ())):
                visit(child)
            order.append(session_id)

        visit(root)
        futures: list[Reply] = []
        for session_id in order:
            done: Reply = concurrent.futures.Future()
            futures.append(done)
            self._dispatch(Route(session_id, Call("destroy", (), done)))

        def all_done(results: list[Reply]) -> None:
            errors = [f.exception() for f in results if f.exception() is not None]
            real = [e for e in errors if not isinstance(e, SessionNotFound)]
            if real:
                fail(message.reply, real[0])
            else:
                complete(message.reply, None)

        self._gather(futures, all_done)

    def on_SessionGone(self, message: SessionGone) -> None:
        session_id = message.session_id
        if self._live.get(session_id) is message.ref:
            del self._live[session_id]
            self._last_used.pop(session_id, None)
            self._metrics.live_sessions.set(len(self._live))
        if message.reason == "destroyed":
            self._forget(session_id)
            self._metrics.session_lifecycle.labels("destroyed").inc()
        else:
            self._metrics.session_lifecycle.labels("passivated").inc()
        self._release(session_id)

    def on_SessionCrashed(self, message: SessionCrashed) -> None:
        log.error("session %s crashed (%s); restarting it", message.session_id, message.error)
        self._restart(message.session_id, message.ref, message.snapshot, message.held)

    def _restart(
        self,
        session_id: str,
        ref: pykka.ActorRef[Any],
        snapshot: SessionSnapshot | None,
        held: tuple[Call, ...],
    ) -> None:
        if self._live.get(session_id) is not ref:
            # Already restarted (or destroyed): just redeliver what it held.
            for call in held:
                self._dispatch(Route(session_id, call))
            return
        del self._live[session_id]
        self._last_used.pop(session_id, None)
        self._metrics.live_sessions.set(len(self._live))
        self._metrics.session_lifecycle.labels("restarted").inc()
        later = self._waiting.pop(session_id, [])
        routes = [Route(session_id, call) for call in held]
        if snapshot is not None:
            self._spawn(snapshot)
            self._waiting[session_id] = []
            self._waiting[session_id].extend(routes + later)
            self._release(session_id)
        else:
            self._restarting.add(session_id)
            self._activate(session_id)
            self._waiting[session_id].extend(routes + later)

    def _passivate(self, session_id: str) -> None:
        ref = self._live.get(session_id)
        if ref is None or session_id in self._waiting:
            return
        answer: Reply = concurrent.futures.Future()
        self._dispatch(Route(session_id, Call("passivate", (), answer)))

        def refused_or_done(done: Reply) -> None:
            refused = done.exception() is not None or not done.result()
            if refused and self._live.get(session_id) is ref:
                self._release(session_id)  # still live (busy, memory-only...): let held calls through

        self._later(answer, refused_or_done)

    def _enforce_max_live(self) -> None:
        if self._max_live is None or len(self._live) <= self._max_live:
            return
        excess = len(self._live) - self._max_live
        for session_id in list(self._last_used)[: excess * 2]:
            if excess <= 0:
                break
            if session_id not in self._waiting:
                self._passivate(session_id)
                excess -= 1

    def on__Tick(self, message: _Tick) -> None:
        depth = self._metrics.mailbox_depth
        depth.labels("session").set(sum(_inbox_depth(ref) for ref in self._live.values()))
        depth.labels("supervisor").set(_inbox_depth(self.actor_ref))
        if self._services.persistence is not None:
            depth.labels("persistence").set(_inbox_depth(self._services.persistence))
        if self._idle_timeout is not None:
            horizon = time.monotonic() - self._idle_timeout
            for session_id, used in list(self._last_used.items()):
                if used > horizon:
                    break  # ordered by last use: the rest are more recent
                self._passivate(session_id)
        self._enforce_max_live()

    def on__Continue(self, message: _Continue) -> None:
        message.fn()

    # ------------------------------------------------------------------ queries

    def on_Query(self, message: Query) -> None:
        kind = message.kind
        if kind == "list":
            complete(message.reply, sorted(self._known))
        elif kind == "count":
            complete(message.reply, len(self._known))
        elif kind == "live_count":
            complete(message.reply, len(self._live))
        elif kind == "children":
            complete(message.reply, sorted(self._children.get(message.arg or "", ())))
        elif kind == "load_all":
            self._load_all(message.reply)
        else:
            fail(message.reply, ValueError(f"unknown supervisor query {kind!r}"))

    def _load_all(self, reply: Reply) -> None:
        futures: list[Reply] = []
        for session_id in sorted(self._known - set(self._live)):
            future: Reply = concurrent.futures.Future()
            futures.append(future)
            self._dispatch(Route(session_id, Call("version", (), future)))
        self._gather(futures, lambda done: complete(reply, sum(1 for f in done if f.exception() is None)))

    def on_Shutdown(self, message: Shutdown) -> None:
        self._shutting_down = True
        futures: list[Reply] = []
        for session_id, ref in list(self._live.items()):
            done: Reply = concurrent.futures.Future()
            futures.append(done)
            try:
                ref.tell(Call("shutdown", (), done))
            except pykka.ActorDeadError:
                complete(done, None)
            del session_id
        self._gather(futures, lambda _done: complete(message.reply, None))


def _inbox_depth(ref: pykka.ActorRef[Any]) -> int:
    """Messages waiting in an actor's inbox (queue.Queue for threads, a sized inbox when pooled)."""
    inbox: Any = ref.actor_inbox
    size = getattr(inbox, "qsize", None)
    if size is not None:
        return int(size())
    try:
        return len(inbox)
    except TypeError:
        return 0


def _with_policy(config: SessionConfig, policy: ConfirmationPolicy) -> SessionConfig:
    return replace(config, confirmation_policy=policy)


def _new_snapshot(
    session_id: str,
    parent_id: str | None,
    config: SessionConfig,
    policy: ConfirmationPolicy | None,
    llm_config: LlmConfig | None = None,
) -> SessionSnapshot:
    now = time.time()
    return SessionSnapshot(
        session_id=session_id,
        version=0,
        parent_id=parent_id,
        state="active",
        config=config,
        confirmation_policy=policy or ConfirmationPolicy(),
        llm_config=llm_config,
        thinking=False,
        budget=None,
        usage=Usage(),
        context_usage=ContextUsage(0, config.max_context_length or DEFAULT_MAX_CONTEXT),
        messages=(),
        history_epoch=0,
        created_at=now,
        updated_at=now,
    )
