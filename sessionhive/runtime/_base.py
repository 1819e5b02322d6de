"""The one actor base class, and the backends that run actors.

Every sessionhive actor derives from :class:`HiveActor`, which leaves pykka's
three runtime hooks (``_create_actor_inbox``, ``_create_future``,
``_start_actor_loop``) to a backend mixed in at spawn time. Swapping how
actors run (on an event loop, on a pool, one thread each) therefore touches
the runtime package only.

Actors talk to each other with ``tell`` only; a request that needs an answer
carries a *reply*: a :class:`concurrent.futures.Future`, or an
:class:`asyncio.Future` when the caller awaits on the loop that runs the
actors. The receiver completes it with :func:`complete` / :func:`fail`. No
handler ever blocks on another actor's future, which is what lets one event
loop, or a small shared pool of threads, run every actor.

Every backend contains failures: an exception of any kind in one actor's
handler stops that actor only, never every actor of the process (pykka's
``ActorRegistry.stop_all`` rule is not applied).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import pykka

if TYPE_CHECKING:
    from pykka._envelope import Envelope

__all__ = [
    "ActorBackend",
    "HiveActor",
    "LoopHandoff",
    "Reply",
    "SpawningBackend",
    "ThreadBackend",
    "complete",
    "complete_threadsafe",
    "fail",
    "fail_contained",
    "guarded",
    "handle_contained",
    "loop_future",
    "loop_handoff",
    "reject_dead_mail",
]

T = TypeVar("T")

pykka_logger = logging.getLogger("pykka")
logger = logging.getLogger(__name__)

Reply = concurrent.futures.Future[Any] | asyncio.Future[Any]
"""Where an actor puts an answer; see :func:`complete`."""

_ALREADY_DONE = (concurrent.futures.InvalidStateError, asyncio.InvalidStateError)


class HiveActor(pykka.Actor):
    """Base of every sessionhive actor.

    Messages are plain objects; ``on_receive`` dispatches each to the method
    named ``on_<ClassName>`` (``on_Generate`` for a ``Generate`` message).
    A message type without a handler is a programming error and is logged by
    pykka's failure handling.
    """

    _handler_cache: ClassVar[dict[type[Any], str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handler_cache = {}

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        name = self._handler_cache.get(kind)
        if name is None:
            name = "on_" + kind.__name__
            if not hasattr(self, name):
                raise TypeError(f"{type(self).__name__} has no handler for {kind.__name__}")
            self._handler_cache[kind] = name
        return getattr(self, name)(message)

    def dead_letters(self) -> Callable[[Any], None] | None:
        """Where ``tell`` messages go that reach this actor after it stopped.

        Asked once when the actor starts; the handler must not keep the
        actor alive (capture what it needs, not ``self``). ``None`` drops them.
        """
        return None

    def _actor_loop_teardown(self) -> None:
        # pykka's teardown answers asks and drops tells; here tells go to
        # the dead-letter handler, so a call that raced the stop is not lost.
        handler = self.dead_letters()
        inbox = self.actor_inbox
        while not inbox.empty():
            envelope = inbox.get()
            if envelope.reply_to is not None and isinstance(envelope.message, pykka.messages._ActorStop):
                envelope.reply_to.set(None)
            else:
                _deliver_dead_letter(envelope, handler)
        super()._actor_loop_teardown()


@runtime_checkable
class ActorBackend(Protocol):
    """Runs actors: spawns them and releases its threads at shutdown."""

    name: str

    def spawn(self, actor_class: Any, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]: ...

    def shutdown(self) -> None: ...


class _ThreadInbox(queue.Queue[Any]):
    """A ThreadingActor inbox that hands mail reaching a dead actor to its dead-letter handler.

    Sealed (under the queue's own mutex) when the actor's loop ends: what is
    left, and whatever a sender puts afterwards, goes to the handler, so a
    sender that saw the actor alive just before it stopped loses nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._dead_letters: Callable[[Any], None] | None = None
        self._sealed = False

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:
            sealed = self._sealed
        if sealed:
            _deliver_dead_letter(item, self._dead_letters)
            return
        super().put(item, block, timeout)

    def seal(self, dead_letters: Callable[[Any], None] | None) -> None:
        with self.mutex:
            self._sealed = True
            self._dead_letters = dead_letters
            left = list(self.queue)
            self.queue.clear()
        for item in left:
            _deliver_dead_letter(item, dead_letters)


def handle_contained(actor: pykka.Actor, envelope: Envelope[Any]) -> None:
    """Handle one message as pykka's actor loop does, but with failures contained to ``actor``.

    An exception from a ``tell`` goes to ``on_failure`` and stops this
    actor; one from an ``ask`` goes to the asker. Unlike pykka, a
    ``BaseException`` (``SystemExit`` from a library's ``sys.exit()``...)
    does the same instead of stopping every actor of the process;
    ``KeyboardInterrupt`` is re-raised once the actor is stopped, so Ctrl-C
    still reaches the program. Every backend handles messages with this.
    """
    try:
        response = actor._handle_receive(envelope.message)
        if envelope.reply_to is not None:
            envelope.reply_to.set(response)
    except Exception:
        if envelope.reply_to is not None:
            pykka_logger.info(f"Exception returned from {actor} to caller:", exc_info=sys.exc_info())
            envelope.reply_to.set_exception()
        else:
            fail_contained(actor)
    except BaseException:  # noqa: BLE001 - contained: this actor fails, nobody else
        fail_contained(actor)


def fail_contained(actor: pykka.Actor) -> None:
    """Stop ``actor`` for the exception being handled: log, run ``on_failure`` (see handle_contained)."""
    error = sys.exc_info()[1]
    actor._handle_failure(*sys.exc_info())
    try:
        actor.on_failure(*sys.exc_info())
    except Exception:  # noqa: BLE001
        actor._handle_failure(*sys.exc_info())
    if isinstance(error, KeyboardInterrupt):
        raise error


def _deliver_dead_letter(envelope: Envelope[Any], dead_letters: Callable[[Any], None] | None) -> None:
    if envelope.reply_to is not None:
        error = pykka.ActorDeadError("actor stopped before handling the message")
        envelope.reply_to.set_exception(exc_info=(pykka.ActorDeadError, error, None))
    elif dead_letters is not None:
        try:
            dead_letters(envelope.message)
        except Exception:
            pykka_logger.exception("sessionhive: dead-letter handler failed")


class _ContainedThreadingActor(pykka.ThreadingActor):
    """pykka's ThreadingActor, minus ``stop_all`` on a BaseException, plus dead letters."""

    use_daemon_thread = True  # an embedding service that exits without Hive.stop() must not hang

    @staticmethod
    def _create_actor_inbox() -> Any:
        return _ThreadInbox()

    def _actor_loop_running(self) -> None:
        # pykka's loop (4.1 to 4.5), each message handled with failures contained.
        while not self.actor_stopped.is_set():
            handle_contained(self, self.actor_inbox.get())

    def _actor_loop_teardown(self) -> None:
        # Runs after HiveActor's drain (earlier in the MRO): seal, so that a
        # sender racing the stop reaches the dead-letter handler too.
        inbox = self.actor_inbox
        if isinstance(inbox, _ThreadInbox):
            inbox.seal(self.dead_letters() if isinstance(self, HiveActor) else None)
        super()._actor_loop_teardown()


class SpawningBackend:
    """What every backend's ``spawn`` shares, written once: SQLAlchemy's pools are the model.

    A user's actor class is mixed with the backend's own actor class
    (:attr:`actor_base`) once per class, the concrete class carrying
    :meth:`_concrete_attributes` (what ties it to this backend); a backend
    that has shut down refuses to spawn. A backend fills in only
    :attr:`actor_base`, and :meth:`_concrete_attributes` and :meth:`_start`
    when pykka's own start does not fit.
    """

    actor_base: ClassVar[type[pykka.Actor]]

    def __init__(self) -> None:
        self._concrete: dict[type[Any], type[Any]] = {}
        self._shut_down = False

    def spawn(self, actor_class: Any, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]:
        """Start ``actor_class(*args, **kwargs)`` on this backend and return its ref.

        ``__init__`` runs in the calling thread; ``on_start`` runs on the
        backend before the actor's first message.

        Raises:
            RuntimeError: the backend has been shut down.
        """
        if self._shut_down:
            msg = f"{self!r} is shut down; create a new backend to spawn actors"
            raise RuntimeError(msg)
        concrete = self._concrete.get(actor_class)
        if concrete is None:
            attributes = {"__module__": actor_class.__module__, **self._concrete_attributes()}
            concrete = type(actor_class.__name__, (actor_class, self.actor_base), attributes)
            self._concrete[actor_class] = concrete
        return self._start(concrete, args, kwargs)

    def _concrete_attributes(self) -> dict[str, Any]:
        return {}

    def _start(
        self, concrete: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> pykka.ActorRef[Any]:
        ref: pykka.ActorRef[Any] = concrete.start(*args, **kwargs)
        return ref


class ThreadBackend(SpawningBackend):
    """pykka's ThreadingActor: one OS thread per actor (with failures contained)."""

    name = "threads"
    actor_base = _ContainedThreadingActor

    def shutdown(self) -> None:
        pass  # every actor owns its thread, and its owner stops it: nothing to release, spawns still work


def reject_dead_mail(
    mailbox: deque[Envelope[Any]] | None, dead_letters: Callable[[Any], None] | None
) -> None:
    """Empty a dead actor's mailbox: an ask fails with ActorDeadError, a tell goes to ``dead_letters``."""
    while mailbox:
        _deliver_dead_letter(mailbox.popleft(), dead_letters)


def complete(future: Reply | None, value: Any) -> None:
    """Set ``future``'s result unless it is absent or already done (a timed-out or cancelled caller).

    An :class:`asyncio.Future` must be completed on its loop's thread, which
    is where actors of the asyncio backend run; from any other thread use
    :func:`complete_threadsafe`.
    """
    if future is None or future.done():
        return
    try:
        future.set_result(value)
    except _ALREADY_DONE:
        pass  # already answered (e.g. a cancel raced a result): first answer wins


def fail(future: Reply | None, error: BaseException | None = None) -> None:
    """Set ``future``'s exception (default: the one being handled)."""
    if future is None or future.done():
        return
    if error is None:
        error = sys.exc_info()[1]
        assert error is not None, "fail() without an error outside an except block"
    try:
        future.set_exception(error)
    except _ALREADY_DONE:
        pass  # already answered: first answer wins


class LoopHandoff:
    """Callbacks handed to one event loop from other threads, with one wake-up per batch.

    The persistence actor's thread answers every session of a group commit at
    once: one ``call_soon_threadsafe`` each (a write to the loop's self-pipe
    and a loop wake-up per answer) cost more than the answers themselves.
    Here the first callback of a batch schedules one drain; the others join it,
    and the drain runs them in the order they came.
    """

    __slots__ = ("__weakref__", "_loop", "_queue", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._scheduled = False

    def add(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop soon; RuntimeError if the loop is closed."""
        self._queue.append((callback, args))
        # The drain clears the flag before it empties the queue: a callback that saw the
        # flag set was appended before the drain started, so the drain will run it.
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # its loop is closed: nothing will ever run these
                self._scheduled = False
                self._queue.clear()
                raise

    def _drain(self) -> None:
        self._scheduled = False
        queue_ = self._queue
        # Only what was queued by now: later callbacks saw the flag clear and scheduled their
        # own drain, so a busy writer cannot keep the loop in this one.
        for _ in range(len(queue_)):
            callback, args = queue_.popleft()
            try:
                callback(*args)
            except Exception:  # one callback's failure must not drop the others of the batch
                logger.exception("sessionhive: a callback handed to the event loop failed")


_handoffs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopHandoff] = weakref.WeakKeyDictionary()
# Not session state: it guards only the creation of a loop's LoopHandoff, so that two
# threads handing the same loop their first callbacks at once share one.
_handoffs_lock = threading.Lock()


def loop_handoff(loop: asyncio.AbstractEventLoop) -> LoopHandoff:
    """The :class:`LoopHandoff` of ``loop`` (one per loop)."""
    found = _handoffs.get(loop)
    if found is None:
        with _handoffs_lock:
            found = _handoffs.get(loop)
            if found is None:
                found = _handoffs[loop] = LoopHandoff(loop)
    return found


def complete_threadsafe(future: Reply | None, value: Any, error: BaseException | None = None) -> None:
    """:func:`complete` (or :func:`fail` with ``error``) from any thread."""
    if isinstance(future, asyncio.Future):
        try:
            if error is None:
                loop_handoff(future.get_loop()).add(complete, future, value)
            else:
                loop_handoff(future.get_loop()).add(fail, future, error)
        except RuntimeError:
            pass  # its loop is closed: nobody awaits it any more
    elif error is None:
        complete(future, value)
    else:
        fail(future, error)


def loop_future(future: concurrent.futures.Future[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """An :class:`asyncio.Future` of ``loop`` that takes ``future``'s outcome, through :class:`LoopHandoff`.

    Like :func:`asyncio.wrap_future`, but an outcome set on another thread joins
    that loop's batch of hand-overs (one wake-up per group commit, not one per
    future). Cancelling the returned future leaves ``future`` alone: its owner
    still settles it, and nobody waits for it any more.
    """
    waiter: asyncio.Future[T] = loop.create_future()

    def settled(done: concurrent.futures.Future[T]) -> None:
        if done.cancelled():
            try:
                loop_handoff(loop).add(waiter.cancel)
            except RuntimeError:
                pass  # its loop is closed: nobody awaits it any more
            return
        error = done.exception()
        complete_threadsafe(waiter, None if error is not None else done.result(), error)

    future.add_done_callback(settled)
    return waiter


def guarded(future: concurrent.futures.Future[T] | None, compute: Callable[[], T]) -> None:
    """Run ``compute`` and put its result or exception into ``future``."""
    try:
        value = compute()
    except Exception as error:  # noqa: BLE001 - delivered to the caller, not swallowed
        fail(future, error)
    else:
        complete(future, value)
