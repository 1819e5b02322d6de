"""The calls from a facade to the shards: batched per shard, under one deadline/retry rule.

:class:`Transport` sends every session call (a typed
:class:`~sessionhive.cluster.messages.SessionOp`) to the shard the placement
names, carrying what is left of its client's timeout. :class:`CallRule` is
the one rule, written once, for what each answer means: "moved" (not run: the
shard has a newer membership, or lost the lease) is retried after a back-off;
"expired" (not run: the deadline passed before it started) is a
:class:`CallTimeout`; a call cut off after it was handed over (its shard died,
restarted, lost the lease, or went silent) is retried when it may safely run
twice, otherwise it is an :class:`OutcomeUnknown`. A client is told "failed"
only for work that did not and will not commit.

Calls to one shard from one event loop share a :class:`_Pipe`: the calls made
in one loop iteration go out in one Ray call (``submit``), and one long-poll
(``collect``) at a time brings back every answer ready. Ray's per-call cost,
not the Hives, limits a cluster on a small machine: this is what pays it per
batch.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

from ray import exceptions as ray_errors

from sessionhive import CallTimeout, HiveStopped, OutcomeUnknown, SessionhiveError
from sessionhive.cluster._tracing import call_trace
from sessionhive.cluster.membership import Cluster
from sessionhive.cluster.messages import (
    Call,
    FeedOp,
    NextEvents,
    Outcome,
    Routing,
    SessionOp,
    ShardRequest,
    StartFeed,
)
from sessionhive.model.ids import check_id

__all__ = ["CallRule", "Transport", "judge_ended"]

#: How long a client waiting for a shard's answer goes without checking whether that shard went silent.
_WAIT_SLICE = 0.2
#: The longest back-off between two attempts of a call that found no serving shard.
_MAX_PAUSE = 0.25
#: Seconds a feed's events are long-polled for at most, per Ray call.
FEED_POLL = 1.0
_RETRY = object()
_SHARD_GONE = (ray_errors.RayActorError, ray_errors.WorkerCrashedError, ray_errors.ObjectLostError)


class CallRule:
    """One call's deadline, retries and back-off, and what each answer means to its client."""

    def __init__(self, op: SessionOp, limit: float | None) -> None:
        self.op = op
        self.limit = limit
        self.deadline = None if limit is None else time.monotonic() + limit
        # Names this attempt in the OutcomeUnknown a client may get (and in the logs).
        self.run_id = uuid.uuid4().hex[:16]
        self._pause = 0.01

    def _what(self) -> str:
        return f"{self.op.name}() on session {self.op.session_id!r}"

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def timing(self) -> tuple[float, float | None]:
        """(now, deadline) by ``time.time()``: a duration would start again if the call was delivered late."""
        now = time.time()
        remaining = self.remaining()
        return now, None if remaining is None else now + remaining

    def slice(self) -> float:
        """How long to wait for an answer before looking at the shard's health again."""
        remaining = self.remaining()
        return _WAIT_SLICE if remaining is None else min(_WAIT_SLICE, remaining)

    def passed(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def judge(self, outcome: Outcome) -> Any:
        """The call's value, ``_RETRY``, or the exception that tells the client what happened."""
        kind, value = outcome
        if kind == "ok":
            return value
        if kind == "err":
            raise _unwrap(value)
        if kind == "expired":
            raise CallTimeout(f"{self._what()} did not start in time: {value}")
        if kind == "moved":
            return _RETRY
        return self.cut_off(str(value))

    def cut_off(self, reason: str) -> Any:
        """The call reached a shard that then failed or went silent: retried if it may run twice."""
        if self.op.idempotent:
            return _RETRY
        raise OutcomeUnknown(self.op.session_id, self.op.name, self.run_id, reason)

    def unanswered(self) -> SessionhiveError:
        """The client's timeout ran out while a shard held the call."""
        if self.op.idempotent:
            return CallTimeout(f"{self._what()} got no answer within {self.limit} s")
        return OutcomeUnknown(
            self.op.session_id, self.op.name, self.run_id, f"its shard gave no answer within {self.limit} s"
        )

    def back_off(self) -> float:
        """Seconds to wait before the next attempt; CallTimeout once the deadline passed (nothing ran)."""
        if self.passed():
            raise CallTimeout(f"{self._what()} found no serving shard within {self.limit} s")
        pause, self._pause = self._pause, min(self._pause * 2, _MAX_PAUSE)
        remaining = self.remaining()
        return pause if remaining is None else min(pause, remaining)


def judge_ended(op: SessionOp, outcome: Outcome) -> Any:
    """The value of a stream's final outcome (a cut-off one is an OutcomeUnknown: streams are not retried)."""
    value = CallRule(op, None).judge(outcome)
    if value is _RETRY:
        raise OutcomeUnknown(op.session_id, op.name, "stream", "its shard handed the session over")
    return value


def _unwrap(exc: BaseException) -> BaseException:
    """A shard's own exception (not Ray's wrapper around it)."""
    if isinstance(exc, ray_errors.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


async def await_ref(ref: Any, timeout: float | None) -> Any:
    """A Ray call's result, awaited on the running loop; ``GetTimeoutError`` after ``timeout`` s."""
    future = asyncio.wrap_future(ref.future())
    done, _ = await asyncio.wait({future}, timeout=timeout)
    if not done:
        raise ray_errors.GetTimeoutError("timed out")
    return future.result()


class _Pipe:
    """Batched calls to one shard from one event loop: one Ray call per batch each way.

    When the shard restarts (its owner changes) the answers of the calls the
    old incarnation held are lost: those calls end as interrupted.
    """

    def __init__(self, handle: Any, caller: str) -> None:
        self.handle = handle
        self._caller = caller
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        # call id -> (its answer, the shard incarnation that took it once known)
        self._waiting: dict[int, tuple[asyncio.Future[Outcome], str | None]] = {}
        self._queue: list[tuple[int, ShardRequest]] = []
        self._poller: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Future[Any]] = set()

    def call(self, request: ShardRequest) -> tuple[int, asyncio.Future[Outcome]]:
        call_id = next(self._ids)
        future: asyncio.Future[Outcome] = self._loop.create_future()
        self._waiting[call_id] = (future, None)
        self._queue.append((call_id, request))
        if len(self._queue) == 1:
            self._loop.call_soon(self._send)
        if self._poller is None:
            self._poller = self._loop.create_task(self._poll())
        return call_id, future

    def forget(self, call_id: int) -> None:
        self._waiting.pop(call_id, None)

    def _send(self) -> None:
        batch, self._queue = self._queue, []
        ids = [call_id for call_id, _request in batch]
        sent = asyncio.wrap_future(self.handle.submit.remote(self._caller, batch).future())
        self._sending.add(sent)

        def submitted(done: asyncio.Future[Any]) -> None:
            self._sending.discard(done)
            error = done.exception()
            for call_id in ids:
                entry = self._waiting.get(call_id)
                if entry is None:
                    continue
                if error is not None:
                    self._finish(call_id, ("interrupted", f"its shard failed ({type(error).__name__})"))
                else:
                    self._waiting[call_id] = (entry[0], done.result())

        sent.add_done_callback(submitted)

    def _finish(self, call_id: int, outcome: Outcome) -> None:
        entry = self._waiting.pop(call_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(outcome)

    async def _poll(self) -> None:
        try:
            while self._waiting:
                try:
                    owner, answers = await await_ref(self.handle.collect.remote(self._caller, 1.0), None)
                except _SHARD_GONE as exc:
                    for call_id, (_future, held_by) in list(self._waiting.items()):
                        if held_by is not None:
                            self._finish(call_id, ("interrupted", f"its shard failed ({type(exc).__name__})"))
                    await asyncio.sleep(0.05)
                    continue
                for call_id, outcome in answers:
                    self._finish(call_id, outcome)
                for call_id, (_future, held_by) in list(self._waiting.items()):
                    if held_by is not None and held_by != owner:
                        self._finish(call_id, ("interrupted", "its shard restarted"))
        finally:
            self._poller = None


class Feed:
    """Where a started turn stream or subscription lives: its shard's pipe and its feed id."""

    def __init__(self, pipe: _Pipe, feed_id: int, run_id: str | None = None) -> None:
        self.pipe = pipe
        self.feed_id = feed_id
        #: A turn's run (``None`` for a subscription or a run's events).
        self.run_id = run_id

    async def next_events(self, wait: float) -> tuple[list[Any], bool, Outcome | None]:
        """A batch of the feed's events (its shard gone: the feed ends interrupted)."""
        _call_id, answer = self.pipe.call(NextEvents(self.feed_id, wait))
        kind, value = await answer
        if kind == "ok":
            events, done, outcome = value
            return list(events), bool(done), outcome
        if kind == "err":
            raise _unwrap(value)
        return [], True, ("interrupted", str(value))

    def close(self) -> None:
        try:
            self.pipe.handle.close_feed.remote(self.feed_id)
        except Exception:  # noqa: BLE001 - the shard is gone: nothing to close
            pass


class Transport:
    """Session calls from one facade to the shards of a :class:`Cluster`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._caller = uuid.uuid4().hex
        self._pipes: dict[tuple[int, str], _Pipe] = {}

    def _pipe(self, shard_id: str) -> _Pipe:
        key = (id(asyncio.get_running_loop()), shard_id)
        pipe = self._pipes.get(key)
        if pipe is None:
            pipe = self._pipes[key] = _Pipe(self.cluster.handle(shard_id), self._caller)
        return pipe

    async def root(self, session_id: str) -> str:
        """The root of ``session_id``'s tree (itself when the cluster does not know it)."""
        cluster = self.cluster
        root = cluster.cached_root(session_id)
        if root is None:
            found = await await_ref(cluster.root_lookup(session_id), cluster.call_timeout)
            root = found if found is not None else session_id
            if found is not None:
                cluster.remember_root(session_id, root)
        return root

    async def call(self, op: SessionOp, limit: float | None, *, root: str | None = None) -> Any:
        """Run ``op`` on its session's shard within ``limit`` s; its value, or what happened instead."""
        _shard_id, value = await self._deliver(op, limit, root, feed=False)
        return value

    async def start_feed(self, op: FeedOp, limit: float | None) -> Feed:
        """Start a turn stream, a subscription or a run's events on the session's shard."""
        shard_id, (feed_id, run_id) = await self._deliver(op, limit, None, feed=True)
        return Feed(self._pipe(shard_id), int(feed_id), run_id)

    async def _deliver(self, op: SessionOp, limit: float | None, root: str | None, *, feed: bool) -> Any:
        cluster = self.cluster
        if cluster.stopped:
            raise HiveStopped()
        check_id(op.session_id)
        rule = CallRule(op, limit)
        root_id = root if root is not None else await self.root(op.session_id)
        while True:
            shard_id = cluster.membership.owner_of(root_id)
            routing = Routing(root_id, cluster.membership_arg(), *rule.timing(), call_trace())
            request: ShardRequest
            if feed:
                assert isinstance(op, FeedOp)
                request = StartFeed(op, routing)
            else:
                request = Call(op, routing)
            value = rule.judge(await self._answer(rule, shard_id, request))
            if value is not _RETRY:
                return shard_id, value
            await asyncio.sleep(rule.back_off())

    async def _answer(self, rule: CallRule, shard_id: str, request: ShardRequest) -> Outcome:
        """The answer of ``shard_id`` to a batched call; a cut-off outcome if it died or went silent."""
        pipe = self._pipe(shard_id)
        call_id, answer = pipe.call(request)
        while True:
            done, _ = await asyncio.wait({answer}, timeout=rule.slice())
            if done:
                return answer.result()
            if rule.passed() or self.cluster.silent(shard_id):
                pipe.forget(call_id)
                if rule.passed():
                    raise rule.unanswered()
                # Not waiting for a stopped shard: its leases run out, its sessions move on.
                return ("interrupted", f"{shard_id} stopped answering")

    async def each_shard(self, send: Callable[[Any], Any], what: str, limit: float | None) -> list[Any]:
        """``send(handle)`` (a Ray call) on every serving shard; their answers, in shard order."""
        cluster = self.cluster
        if cluster.stopped:
            raise HiveStopped()
        refs = [send(cluster.handle(sid)) for sid in cluster.membership.shard_ids]
        try:
            return list(await asyncio.gather(*(await_ref(ref, limit) for ref in refs)))
        except ray_errors.GetTimeoutError:
            raise CallTimeout(f"{what} got no answer from every shard in time") from None
