"""The one actor base class, and the backends that run actors.

Every sessionhive actor derives from :class:`HiveActor`, which leaves pykka's
three runtime hooks (``_create_actor_inbox``, ``_create_future``,
``_start_actor_loop``) to a backend mixed in at spawn time. Swapping how
actors run (one thread each, or a pool) therefore touches this module only.

Actors talk to each other with ``tell`` only; a request that needs an answer
carries a :class:`concurrent.futures.Future` (or a reply-to ref) that the
receiver completes. No handler ever blocks on another actor's future, which
is what lets a small shared pool of dispatcher threads run every actor.
"""

from __future__ import annotations

import concurrent.futures
import sys
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import pykka

__all__ = ["ActorBackend", "HiveActor", "ThreadBackend", "complete", "fail", "guarded"]

T = TypeVar("T")


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


@runtime_checkable
class ActorBackend(Protocol):
    """Runs actors: spawns them and releases its threads at shutdown."""

    name: str

    def spawn(self, actor_class: Any, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]: ...

    def shutdown(self) -> None: ...


class ThreadBackend:
    """pykka's ThreadingActor: one OS thread per actor."""

    name = "threads"

    def __init__(self) -> None:
        self._concrete: dict[type[Any], type[Any]] = {}

    def spawn(self, actor_class: Any, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]:
        concrete = self._concrete.get(actor_class)
        if concrete is None:
            # Daemon threads: an embedding service that exits without
            # Hive.stop() must not hang on idle session threads.
            concrete = type(
                actor_class.__name__,
                (actor_class, pykka.ThreadingActor),
                {"use_daemon_thread": True, "__module__": actor_class.__module__},
            )
            self._concrete[actor_class] = concrete
        ref: pykka.ActorRef[Any] = concrete.start(*args, **kwargs)
        return ref

    def shutdown(self) -> None:
        pass


def complete(future: concurrent.futures.Future[T] | None, value: T) -> None:
    """Set ``future``'s result unless it is absent or already done (a timed-out caller)."""
    if future is None:
        return
    try:
        future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass  # already answered (e.g. a cancel raced a result): first answer wins


def fail(future: concurrent.futures.Future[Any] | None, error: BaseException | None = None) -> None:
    """Set ``future``'s exception (default: the one being handled)."""
    if future is None:
        return
    if error is None:
        error = sys.exc_info()[1]
        assert error is not None, "fail() without an error outside an except block"
    try:
        future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass  # already answered: first answer wins


def guarded(future: concurrent.futures.Future[T] | None, compute: Callable[[], T]) -> None:
    """Run ``compute`` and put its result or exception into ``future``."""
    try:
        value = compute()
    except Exception as error:  # noqa: BLE001 - delivered to the caller, not swallowed
        fail(future, error)
    else:
        complete(future, value)
