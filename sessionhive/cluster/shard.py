"""``HiveShard``: the Ray actor that hosts one AsyncHive and the ownership leases of its sessions.

A shard serves the sessions whose tree root the cluster's placement gives
it. A session's calls enter one line on the shard in the order they arrive,
before any lease wait (the wait belongs to the session, not to each call),
and leave it in that order for the session's mailbox; a call whose client
deadline passed before it started leaves unrun ("expired"). Before a call
reaches its Hive, the shard holds the session's lease in
the shared SQL store (winning it may wait for a previous owner to release it
or for its lease to expire); its store is fenced by those leases, so once
another shard took a session over, nothing this shard still has of it is
ever written. Leases are renewed in one statement every third of their
duration and released when the shard hands sessions over or stops. A shard
that was stopped (SIGSTOP) past its leases finds them taken when it
continues: the calls it still held for those sessions are handed back
("moved") without running.

The Hive reads the index of stored sessions when it starts, and looks up in
the store a root session it does not know (created by another shard later).
When a call names a child session created elsewhere since, or one that
another shard wrote since this Hive activated it, the shard restarts its Hive
("refresh"): the new one reads everything afresh; calls in flight on the old
one end as interrupted.

Streaming: a turn's or a subscription's events are gathered in the shard and
fetched by the caller in batches (one Ray call returns every event that
arrived since the last one), never one Ray call per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ray
from prometheus_client import CollectorRegistry
from sqlalchemy import make_url, select
from sqlalchemy.exc import SQLAlchemyError

from sessionhive import AsyncHive, HiveStopped, MetricsConfig, SessionhiveError, TurnCancelled
from sessionhive.cluster._shard_metrics import serve_shard_metrics
from sessionhive.cluster._tracing import continues_caller_trace
from sessionhive.cluster.messages import (
    Call,
    FeedOp,
    NextEvents,
    Outcome,
    RestoreSession,
    Routing,
    SessionOp,
    ShardOp,
    ShardRequest,
    StartFeed,
    StartTurn,
)
from sessionhive.cluster.placement import Membership
from sessionhive.persistence import SqlStore
from sessionhive.persistence.leases import LeaseHeld, LeaseTable
from sessionhive.persistence.schema import SESSIONS

__all__ = ["HiveShard"]

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger("sessionhive.cluster")


class _Expired(Exception):
    """The call's client deadline passed before the call started: it is dropped unrun."""


class _Moved(Exception):
    """The session's tree was placed on another shard while this one waited for its lease."""


#: Seconds kept, of a call's client timeout, for its answer to travel back.
_ANSWER_MARGIN = 0.05


class _SessionLine:
    """The calls of one session waiting, in arrival order, to reach its mailbox."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        # asyncio.Lock wakes its waiters first come, first served: the line's order.
        self.lock = asyncio.Lock()
        self.users = 0


@dataclass
class _Feed:
    """The events of one turn or subscription, waiting to be fetched in a batch."""

    session_id: str
    events: list[Any] = field(default_factory=list)
    done: bool = False
    outcome: Outcome | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    source: Any = None


#: Seconds a shard's transaction may sit idle at least (a live shard on a loaded machine may be
#: descheduled that long between two statements; ending its transaction fails a write).
_MIN_IDLE_LIMIT = 2.0


def _idle_transactions_end(store_url: str, seconds: float) -> str:
    """``store_url`` with PostgreSQL told to end this shard's transactions idle for ``seconds``.

    A shard stopped (SIGSTOP) inside a write transaction holds the row locks of
    its leases and sessions: without this, the shard that takes its sessions
    over would block on those locks until the stopped one continues, long
    after its leases expired. Ended after half a lease (2 s at least), the
    locks are gone about when the leases are. Other databases: the URL unchanged.
    """
    url = make_url(store_url)
    if url.get_backend_name() != "postgresql":
        return store_url
    existing = url.query.get("options", "")
    joined = existing if isinstance(existing, str) else " ".join(existing)
    limit = f"-c idle_in_transaction_session_timeout={int(seconds * 1000)}"
    options = f"{joined} {limit}".strip()
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False)


class HiveShard:
    """One shard of a cluster: an :class:`~sessionhive.AsyncHive` behind a Ray async actor.

    Created by :class:`~sessionhive.cluster.ClusterHive` (``ray.remote(HiveShard)``);
    a restarted actor (its process killed) is a new lease owner that takes
    the old incarnation's leases over at once (Ray restarts an actor only
    once its process is gone; the new epoch fences it anyway).
    """

    def __init__(
        self,
        shard_id: str,
        store_url: str,
        llm: Any = None,
        hive_options: dict[str, Any] | None = None,
        *,
        lease_ttl: float = 10.0,
        audit_writes: bool = False,
        metrics: bool = True,
        metrics_addr: str = "127.0.0.1",
    ) -> None:
        self.shard_id = shard_id
        self._store_url = _idle_transactions_end(store_url, max(_MIN_IDLE_LIMIT, float(lease_ttl) / 2))
        self._llm = llm
        self._hive_options = dict(hive_options or {})
        self._lease_ttl = float(lease_ttl)
        self._audit = audit_writes
        self._want_metrics = metrics
        self._metrics_addr = metrics_addr
        # A restarted process is another owner: its predecessor's leases must expire first.
        self.owner = f"{shard_id}@{uuid.uuid4().hex[:12]}"
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._refresh_lock: asyncio.Lock | None = None
        self._ready: asyncio.Event | None = None
        self._hive: AsyncHive | None = None
        self._generation = 0
        self._index_store: SqlStore | None = None
        self._leases: LeaseTable | None = None
        self._membership = Membership(0, [shard_id])
        self._known: set[str] = set()
        self._parents: dict[str, str | None] = {}
        self._touched: set[str] = set()
        self._feeds: dict[int, _Feed] = {}
        self._feed_ids = itertools.count(1)
        self._renewer: asyncio.Task[None] | None = None
        self._metrics_server: WSGIServer | None = None
        self._metrics_address: str | None = None
        self._refreshes = 0
        self._stopping = False
        # Answers of batched calls (submit/collect), per caller, until it collects them.
        self._outboxes: dict[str, list[tuple[int, Outcome]]] = {}
        self._outbox_ready: dict[str, asyncio.Event] = {}
        self._running: set[asyncio.Task[None]] = set()
        # Per session, on the shard's one loop: its calls in arrival order until they reach the mailbox.
        self._lines: dict[str, _SessionLine] = {}
        # Sessions whose lease another owner took (seen at a renewal): their held calls go back.
        self._lost: set[str] = set()
        # Per session, how often this shard cancelled its work to hand it over: a call that
        # ends cancelled after such a hand-over began was not cancelled by its client.
        self._handovers: dict[str, int] = {}

    # ------------------------------------------------------------------ life cycle

    async def _ensure_started(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            # Coroutine ordering on the shard's one loop (start once, refresh
            # the Hive once at a time), not shared state between threads.
            self._start_lock = asyncio.Lock()
            self._refresh_lock = asyncio.Lock()
            self._ready = asyncio.Event()
        async with self._start_lock:
            if self._started:
                return
            self._index_store = await asyncio.to_thread(SqlStore, self._store_url)
            engine = self._index_store.engine
            self._leases = await asyncio.to_thread(
                LeaseTable, engine, self.owner, ttl=self._lease_ttl, audit=self._audit
            )
            await self._start_hive()
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
            if self._want_metrics:
                await asyncio.to_thread(self._serve_metrics)
            self._started = True

    async def _start_hive(self) -> None:
        assert self._index_store is not None and self._leases is not None and self._ready is not None
        # Read before the Hive reads its own: whatever this set holds, the Hive knows.
        index = await asyncio.to_thread(self._index_store.list_index)
        store = await asyncio.to_thread(SqlStore, self._store_url)
        store.write_fence = self._leases.fence
        options = dict(self._hive_options)
        options["metrics"] = MetricsConfig(registry=CollectorRegistry(auto_describe=True))
        # Other shards create sessions in this store: the Hive looks up an id it does not
        # know instead of answering "no such session" from the ids it read at start.
        options["shared_store"] = True
        self._hive = await AsyncHive.start(store=store, llm=self._llm, **options)
        self._known = {sid for sid, _parent in index}
        self._parents = dict(index)
        self._touched = set()
        self._generation += 1
        self._ready.set()

    def _serve_metrics(self) -> None:
        self._metrics_server, self._metrics_address = serve_shard_metrics(
            self.shard_id,
            self._metrics_addr,
            lambda: self._hive.metrics.registry if self._hive is not None else None,
        )

    async def _renew_forever(self) -> None:
        assert self._leases is not None
        while not self._stopping:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                # A lease won for a session placed elsewhere since (the membership moved
                # while the lease was awaited) is let go here, within a third of a lease.
                await self._hand_over()
                lost = await asyncio.to_thread(self._leases.renew)
            except Exception as exc:  # noqa: BLE001 - the next renewal tries again
                log.warning("shard %s: renewing leases failed: %s", self.shard_id, exc)
                continue
            if lost:
                self._lost.update(lost)
                log.warning("shard %s lost the lease of %d sessions", self.shard_id, len(lost))

    async def _current_hive(self) -> AsyncHive:
        assert self._ready is not None
        while self._hive is None:
            self._ready.clear()
            await self._ready.wait()
        return self._hive

    async def _refresh(self, generation: int, reason: str) -> None:
        """Restart the Hive so that it reads the store afresh (unless another refresh did it already)."""
        assert self._refresh_lock is not None
        async with self._refresh_lock:
            if self._generation != generation or self._stopping:
                return
            log.info("shard %s restarts its Hive: %s", self.shard_id, reason)
            self._refreshes += 1
            old, self._hive = self._hive, None
            if old is not None:
                try:
                    await old.stop()
                except Exception as exc:  # noqa: BLE001 - a fenced or failed flush does not stop the refresh
                    log.warning("shard %s: stopping the old Hive: %s", self.shard_id, exc)
            await self._start_hive()

    # ------------------------------------------------------------------ ownership

    def _adopt(self, version: int, shard_ids: tuple[str, ...]) -> None:
        if version > self._membership.version:
            self._membership = Membership(version, shard_ids)

    def _root(self, session_id: str) -> str:
        seen = {session_id}
        current = session_id
        while True:
            parent = self._parents.get(current)
            if parent is None or parent in seen:
                return current
            seen.add(parent)
            current = parent

    def _stored_parent(self, session_id: str) -> tuple[bool, str | None]:
        assert self._index_store is not None
        with self._index_store.engine.connect() as conn:
            row = conn.execute(select(SESSIONS.c.parent_id).where(SESSIONS.c.id == session_id)).one_or_none()
        return (False, None) if row is None else (True, row[0])

    async def _learn(self, session_id: str, creating: bool) -> tuple[bool, str | None]:
        """Whether ``session_id`` exists (or is being created); why the Hive must restart for it, if so."""
        if session_id in self._known:
            return True, None
        exists, parent = await asyncio.to_thread(self._stored_parent, session_id)
        if not exists:
            return creating, None
        self._parents[session_id] = parent
        self._known.add(session_id)
        if parent is None:
            return True, None  # a root created elsewhere: the Hive looks it up (shared_store)
        # A child needs its parent's list of children read again, as the Hive reads it at start.
        return True, f"child session {session_id!r} was created after this Hive started"

    async def _own(
        self, session_id: str, root_id: str, deadline: float, sent_at: float, *, creating: bool = False
    ) -> bool:
        """Hold the lease of ``session_id`` and make sure the Hive's view of it is current.

        False for a session that does not exist (and is not being created): no
        lease is taken for a name, and the Hive answers that it is unknown.

        Raises ``_Moved`` for a call sent (``sent_at``, by ``time.time()``)
        before the owner this shard won the lease from had won it: the call
        was sent to this shard while it was stopped, or to the dead
        incarnation it replaces, and its client has moved on; that owner may
        have run the client's later calls, and running this one now would put
        it after them.
        """
        assert self._leases is not None
        generation = self._generation
        stale = False
        present, refresh = await self._learn(session_id, creating)
        if not present:
            return False  # no such session: the Hive says so, and no lease is taken for a name
        if not self._leases.is_valid(session_id, margin=self._lease_ttl / 10):
            delay = 0.02
            while True:
                try:
                    # An earlier incarnation of this shard is dead (Ray restarted it): its leases
                    # are taken over at once instead of waited out.
                    lease = await asyncio.to_thread(
                        self._leases.acquire, session_id, supersedes=f"{self.shard_id}@"
                    )
                    break
                except LeaseHeld as held:
                    if self._membership.owner_of(root_id) != self.shard_id or session_id in self._lost:
                        # Placed elsewhere meanwhile, or taken while this shard was stopped:
                        # the caller re-routes; nothing of the call ran here.
                        raise _Moved() from None
                    if time.monotonic() + min(delay, held.expires_in) > deadline:
                        raise _Expired(str(held)) from None
                    await asyncio.sleep(min(delay, max(held.expires_in, 0.005)))
                    delay = min(delay * 2, 0.25)
            self._lost.discard(session_id)
            stale = lease.changed_hands and lease.previous_won_at > sent_at
            touched = session_id in self._touched or self._root(session_id) in self._touched
            if (lease.taken_over or lease.changed_hands) and touched and refresh is None:
                # Another owner held it since the current Hive read it: that copy is stale.
                refresh = f"session {session_id!r} was written by another shard since it was here"
        try:
            if refresh is not None:
                await self._refresh(generation, refresh)
        finally:
            # The Hive that had a stale copy is gone (or never had one): writes may go through.
            self._leases.mark_fresh(session_id)
        if stale:
            raise _Moved()  # after the refresh: whatever runs next here sees the other owner's writes
        return True

    async def _still_owned(self, session_id: str) -> bool:
        """Whether the lease is still ours, so that an answer may be given (a query only when in doubt)."""
        assert self._leases is not None
        if self._leases.is_valid(session_id):
            return True
        # Read, never win: a lease won here would skip the Hive refresh that _own does
        # when another owner wrote meanwhile, and let this Hive's stale copy be written.
        try:
            return await asyncio.to_thread(self._leases.still_holds, session_id)
        except SQLAlchemyError:
            return False

    def _note(self, op: SessionOp) -> None:
        if op.creates:
            self._known.add(op.session_id)
            self._parents[op.session_id] = None
        child = op.new_child()
        if child is not None:
            self._known.add(child)
            self._parents[child] = op.session_id

    # ------------------------------------------------------------------ calls

    async def ping(self) -> dict[str, Any]:
        await self._ensure_started()
        return {
            "shard": self.shard_id,
            "owner": self.owner,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "metrics": self._metrics_address,
        }

    @contextlib.asynccontextmanager
    async def _in_line(self, session_id: str) -> AsyncIterator[None]:
        """Wait for the session's earlier calls to reach its mailbox (joining the line never yields first)."""
        line = self._lines.get(session_id)
        if line is None:
            line = self._lines[session_id] = _SessionLine()
        line.users += 1
        try:
            async with line.lock:
                yield
        finally:
            line.users -= 1
            if line.users == 0:
                del self._lines[session_id]

    async def _enter(
        self,
        session_id: str,
        root_id: str,
        deadline: float,
        sent_at: float,
        *,
        creating: bool = False,
        child: str | None = None,
    ) -> AsyncHive:
        """Own the session (and a new ``child``) for a call at the head of its line; the Hive to run it on."""
        if time.monotonic() >= deadline:
            raise _Expired("its deadline passed while it waited for the calls before it")
        owned = (
            [session_id] if await self._own(session_id, root_id, deadline, sent_at, creating=creating) else []
        )
        if child is not None and await self._own(child, root_id, deadline, sent_at, creating=True):
            owned.append(child)
        if self._membership.owner_of(root_id) != self.shard_id:
            raise _Moved()  # the membership changed while the lease was awaited
        hive = await self._current_hive()
        # Marked here, with no await since the Hive was read: the mark belongs to the Hive that
        # will hold the copy. Marked before (while a refresh was starting the next Hive), it was
        # wiped by that start, and a later take-over then kept the stale copy (a write of an
        # older version under a newer epoch).
        self._touched.update(owned)
        if time.monotonic() >= deadline:
            raise _Expired("its deadline passed while the session's lease was awaited")
        return hive

    def _deadline(self, arrived: float, deadline: float | None) -> float:
        """The client's wall-clock ``deadline`` on this shard's monotonic clock.

        Wall clock, not a duration: a call delivered late (to a shard that was
        stopped, or to the restarted incarnation of a killed one) must not get
        its whole timeout again, or it would run after its client moved on.
        """
        if deadline is None:  # a call without a timeout still waits for a lease only so long
            return arrived + 3 * self._lease_ttl
        # A call that starts later could not answer before its client stops waiting:
        # dropping it then lets the client hear "never started" instead of "unknown".
        return arrived + (deadline - time.time()) - _ANSWER_MARGIN

    @continues_caller_trace
    async def call(self, op: SessionOp, routing: Routing) -> Outcome:
        """Run ``op`` on the session's behalf.

        ``routing.deadline``: when its client stops waiting (``time.time()``,
        ``None``: never). A call that has not started by then is dropped
        unrun (``"expired"``).
        """
        arrived = time.monotonic()
        session_id = op.session_id
        await self._ensure_started()
        self._adopt(*routing.membership)
        if self._membership.owner_of(routing.root_id) != self.shard_id:
            return ("moved", None)
        until = self._deadline(arrived, routing.deadline)
        hive: AsyncHive | None = None  # the Hive the call ran on; replaced or stopped: not its client's doing
        handovers = self._handovers.get(session_id, 0)
        try:
            async with self._in_line(session_id):
                hive = await self._enter(
                    session_id,
                    routing.root_id,
                    until,
                    routing.sent_at,
                    creating=op.creates,
                    child=op.new_child(),
                )
                running = asyncio.ensure_future(op.run(hive))
                # One loop turn runs the call's first step, which puts it in the session's
                # mailbox; only then may the next call of the line follow it there.
                await asyncio.sleep(0)
            value = await running
            if op.mutating and not await self._still_owned(session_id):
                return ("interrupted", f"shard {self.shard_id} lost the lease of {session_id!r} meanwhile")
            self._note(op)
            return ("ok", value)
        except _Moved:
            return ("moved", None)
        except _Expired as expired:
            return ("expired", str(expired))
        except HiveStopped:
            if hive is not None and self._hive is not hive:
                return ("interrupted", f"shard {self.shard_id} restarted its Hive")
            return ("err", HiveStopped())
        except TurnCancelled as cancelled:
            handed_over = self._handovers.get(session_id, 0) != handovers
            if (hive is not None and self._hive is not hive) or handed_over:
                # This shard cancelled it itself (handing over, restarting its Hive): it may have been stored.
                return ("interrupted", f"shard {self.shard_id} handed the session over mid-turn")
            return ("err", cancelled)
        except SessionhiveError as exc:
            if op.mutating and session_id in self._touched and not await self._still_owned(session_id):
                # Failed because another owner took the session (a fenced write): what
                # this call wrote before that is in the store, what it wrote after is not.
                return ("interrupted", f"shard {self.shard_id} lost the lease of {session_id!r} mid-call")
            return ("err", exc)

    # ------------------------------------------------------------------ batched calls

    async def submit(self, caller: str, calls: list[tuple[int, ShardRequest]]) -> str:
        """Start many calls (``(id, request)``) at once; returns this incarnation's owner name.

        Their answers wait for :meth:`collect`. One Ray call carries a whole
        batch in and one carries every answer ready by then out, so that the
        Ray overhead (the dominant cost of a call on a small machine) is paid
        per batch, not per call. The owner (this incarnation) tells the
        caller which answers a restart lost.
        """
        await self._ensure_started()
        loop = asyncio.get_running_loop()
        for call_id, request in calls:
            task = loop.create_task(self._run_batched(caller, call_id, request))
            self._running.add(task)  # a task nobody references may be collected mid-call
            task.add_done_callback(self._running.discard)
        return self.owner

    async def _run_batched(self, caller: str, call_id: int, request: ShardRequest) -> None:
        outcome: Outcome
        try:
            if isinstance(request, Call):
                outcome = await self.call(request.op, request.routing)
            elif isinstance(request, StartFeed):
                outcome = await self.start_feed(request)
            else:
                outcome = ("ok", await self.next_events(request))
        except Exception as exc:  # noqa: BLE001 - delivered to the caller
            outcome = ("err", exc)
        self._outboxes.setdefault(caller, []).append((call_id, outcome))
        self._outbox_event(caller).set()

    def _outbox_event(self, caller: str) -> asyncio.Event:
        event = self._outbox_ready.get(caller)
        if event is None:
            event = self._outbox_ready[caller] = asyncio.Event()
        return event

    async def collect(self, caller: str, wait: float) -> tuple[str, list[tuple[int, Outcome]]]:
        """The answers ready for ``caller`` (waiting up to ``wait`` s for one), with this shard's owner."""
        await self._ensure_started()
        event = self._outbox_event(caller)
        if not self._outboxes.get(caller):
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), wait)
            except TimeoutError:
                pass
        return self.owner, self._outboxes.pop(caller, [])

    async def start_feed(self, request: StartFeed) -> Outcome:
        """Start a turn (:class:`StartTurn`), a subscription or a run's events; answers a feed id.

        The stream must be accepted by the routing's deadline, as for :meth:`call`.
        """
        return await self._open_feed(request.op, request.routing)

    @continues_caller_trace
    async def _open_feed(self, op: SessionOp, routing: Routing) -> Outcome:
        arrived = time.monotonic()
        assert isinstance(op, FeedOp)
        await self._ensure_started()
        self._adopt(*routing.membership)
        if self._membership.owner_of(routing.root_id) != self.shard_id:
            return ("moved", None)
        until = self._deadline(arrived, routing.deadline)
        timeout = None if routing.deadline is None else max(0.0, until - time.monotonic())
        turn = isinstance(op, StartTurn)
        try:
            async with self._in_line(op.session_id):
                hive = await self._enter(op.session_id, routing.root_id, until, routing.sent_at)
                source = await op.open(hive, timeout)
        except _Moved:
            return ("moved", None)
        except _Expired as expired:
            return ("expired", str(expired))
        except SessionhiveError as exc:
            return ("err", exc)
        feed_id = next(self._feed_ids)
        feed = _Feed(op.session_id, source=source)
        self._feeds[feed_id] = feed
        feed.task = asyncio.get_running_loop().create_task(self._pump(feed, turn))
        # A turn's run id is known once the session accepted it: the facade's stream tells it.
        return ("ok", (feed_id, getattr(source, "run_id", None)))

    async def _pump(self, feed: _Feed, turn: bool) -> None:
        try:
            async for event in feed.source:
                feed.events.append(event)
                feed.changed.set()
            if turn:
                try:
                    result = await feed.source.result()
                    if await self._still_owned(feed.session_id):
                        feed.outcome = ("ok", result)
                    else:
                        feed.outcome = ("interrupted", f"shard {self.shard_id} lost the lease meanwhile")
                except SessionhiveError as exc:
                    feed.outcome = ("err", exc)
            else:
                feed.outcome = ("ok", None)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            feed.outcome = ("err", exc)
        finally:
            feed.done = True
            feed.changed.set()

    async def next_events(self, request: NextEvents) -> tuple[list[Any], bool, Outcome | None]:
        """Every event since the last fetch (waiting up to ``wait`` s for one); ends with the outcome."""
        feed_id, wait = request.feed_id, request.wait
        feed = self._feeds.get(feed_id)
        if feed is None:
            return ([], True, ("interrupted", "this shard restarted since the stream began"))
        if not feed.events and not feed.done:
            feed.changed.clear()
            try:
                await asyncio.wait_for(feed.changed.wait(), wait)
            except TimeoutError:
                pass
        events, feed.events = feed.events, []
        if feed.done and not feed.events:
            self._feeds.pop(feed_id, None)
            return (events, True, feed.outcome)
        return (events, False, None)

    async def close_feed(self, feed_id: int) -> None:
        feed = self._feeds.pop(feed_id, None)
        if feed is not None and feed.source is not None and hasattr(feed.source, "close"):
            feed.source.close()

    # ------------------------------------------------------------------ the shard as a whole

    async def set_membership(self, version: int, shard_ids: tuple[str, ...]) -> int:
        """Adopt a membership; hand over the sessions it moves elsewhere. Returns how many moved."""
        await self._ensure_started()
        if version <= self._membership.version:
            return 0
        self._membership = Membership(version, shard_ids)
        return await self._hand_over()

    async def _hand_over(self) -> int:
        assert self._leases is not None
        moving = [
            sid for sid in self._leases.held() if self._membership.owner_of(self._root(sid)) != self.shard_id
        ]
        if not moving:
            return 0
        hive = await self._current_hive()
        # Stop their work (a running turn ends cancelled), write what they have, then let go.
        for sid in moving:
            if sid in self._touched:
                self._handovers[sid] = self._handovers.get(sid, 0) + 1
                try:
                    await hive.cancel_operation(sid)
                except SessionhiveError:
                    pass
        try:
            await hive.flush()
        except SessionhiveError as exc:
            log.warning("shard %s: flush before a hand-over failed: %s", self.shard_id, exc)
        await asyncio.to_thread(self._leases.release, moving)
        return len(moving)

    async def owned_ids(self, membership: tuple[int, tuple[str, ...]]) -> list[str]:
        """The sessions this shard's Hive knows and the membership places here."""
        await self._ensure_started()
        self._adopt(*membership)
        hive = await self._current_hive()
        ids = await hive.list_sessions()
        for sid in ids:
            if sid not in self._parents:
                self._parents[sid] = None
        return [sid for sid in ids if self._membership.owner_of(self._root(sid)) == self.shard_id]

    async def root_of(self, session_id: str) -> str | None:
        """The root of ``session_id``'s tree as this shard or the store knows it; ``None`` if unknown."""
        await self._ensure_started()
        if session_id in self._parents:
            return self._root(session_id)
        chain = [session_id]
        while True:
            exists, parent = await asyncio.to_thread(self._stored_parent, chain[-1])
            if not exists:
                return None if len(chain) == 1 else chain[-1]
            if parent is None or parent in chain:
                return chain[-1]
            chain.append(parent)

    async def load_owned(self, membership: tuple[int, tuple[str, ...]]) -> int:
        """Activate every session placed here (see ``load_all_sessions``)."""
        count = 0
        for sid in await self.owned_ids(membership):
            outcome = await self.call(
                RestoreSession(sid), Routing(self._root(sid), membership, time.time(), None)
            )
            count += outcome[0] == "ok"
        return count

    async def hive_call(self, op: ShardOp) -> Any:
        """A call on the Hive as a whole (``LiveSessionCount``, ``StoreHealth``, ``FlushShard``)."""
        await self._ensure_started()
        return await op.run(await self._current_hive(), self.shard_id)

    async def stats(self) -> dict[str, Any]:
        """For tests and operators: leases held, fenced writes, Hive restarts."""
        await self._ensure_started()
        assert self._leases is not None
        return {
            "owner": self.owner,
            "held": len(self._leases.held()),
            "fenced": self._leases.fenced_total,
            "refreshes": self._refreshes,
            "generation": self._generation,
        }

    async def shutdown(self) -> None:
        """Stop the Hive (it flushes), release every lease, stop serving metrics."""
        if not self._started:
            return
        self._stopping = True
        assert self._leases is not None
        if self._renewer is not None:
            self._renewer.cancel()
        hive, self._hive = self._hive, None
        if hive is not None:
            try:
                await hive.stop()
            except Exception as exc:  # noqa: BLE001 - releasing still happens
                log.warning("shard %s: stopping its Hive: %s", self.shard_id, exc)
        try:
            await asyncio.to_thread(self._leases.release, self._leases.held())
        except Exception as exc:  # noqa: BLE001 - they expire anyway
            log.warning("shard %s: releasing leases: %s", self.shard_id, exc)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self._index_store is not None:
            self._index_store.close()
