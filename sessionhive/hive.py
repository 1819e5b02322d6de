"""``Hive`` and ``AsyncHive``: the facade users call.

The facade owns no session state. Each call becomes a message to the
SupervisorActor (which routes it to the session's actor) carrying a
:class:`concurrent.futures.Future` for the answer; ``Hive`` waits on that
future, ``AsyncHive`` awaits it through ``asyncio.wrap_future`` so that the
event loop never blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import pykka

from sessionhive._channels import AsyncChannel, ThreadChannel
from sessionhive.actors.session import Call, HiveServices
from sessionhive.actors.supervisor import Create, Destroy, Notify, Query, Route, Shutdown, SupervisorActor
from sessionhive.actors.turn import TurnLoop
from sessionhive.llm import ClientCache, LlmClient, LlmConfig
from sessionhive.metrics.registry import HiveMetrics, MetricsConfig
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.errors import CallTimeout, HiveStopped, InvalidConfig, StoreError
from sessionhive.model.events import AgentEvent
from sessionhive.model.ids import check_id
from sessionhive.model.messages import AgentResult, ContextUsage, Message, ToolDefinition, Usage
from sessionhive.runtime import ActorBackend, ThreadBackend
from sessionhive.tools import ToolExecutor

__all__ = ["Hive", "Subscription", "TurnStream"]

log = logging.getLogger("sessionhive")

T = TypeVar("T")
Future = concurrent.futures.Future

DEFAULT_STORE = "sqlite:///sessionhive.db"
DEFAULT_CALL_TIMEOUT = 60.0


def _wait(future: Future[T], timeout: float | None, what: str) -> T:
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        if future.done():
            raise  # the operation itself failed with a TimeoutError: not ours to rename
        raise CallTimeout(f"{what} got no answer within {timeout} s (the work may still finish)") from None


DEFAULT_ACTOR_BACKEND = "pooled"


def _singletons_get_threads(choice: str | ActorBackend | None, backend: ActorBackend) -> bool:
    return not isinstance(choice, ActorBackend) and backend.name == "pooled"


def _make_backend(choice: str | ActorBackend | None) -> ActorBackend:
    if choice is None:
        choice = os.environ.get("SESSIONHIVE_ACTOR_BACKEND") or DEFAULT_ACTOR_BACKEND
    if not isinstance(choice, str):
        return choice
    if choice == "threads":
        return ThreadBackend()
    if choice == "pooled":
        from sessionhive.runtime import PooledBackend

        return PooledBackend()
    raise InvalidConfig(f"actor_backend must be 'pooled' or 'threads', got {choice!r}")


class TurnStream:
    """The events of one turn as they happen, ending with TurnEnd, TurnError or TurnCancelled.

    Iterate it for the events; :meth:`result` waits for the :class:`AgentResult`
    (and raises :class:`~sessionhive.TurnCancelled`, :class:`~sessionhive.TurnFailed`
    or :class:`~sessionhive.LlmError` when the turn did not complete).
    """

    def __init__(self, hive: Hive, session_id: str, channel: ThreadChannel, result: Future[AgentResult]):
        self.session_id = session_id
        self._hive = hive
        self._channel = channel
        self._result = result

    def __iter__(self) -> Iterator[AgentEvent]:
        while True:
            event = self._channel.get()
            if event is None:
                return
            yield event

    def result(self, timeout: float | None = None) -> AgentResult:
        return _wait(self._result, timeout, f"the turn of session {self.session_id!r}")

    def cancel(self) -> bool:
        """Cancel this session's running operation (see :meth:`Hive.cancel_operation`)."""
        return self._hive.cancel_operation(self.session_id)


class Subscription:
    """A session's events, from now until :meth:`close` or the session's end.

    The queue is bounded: when the reader falls behind, events are dropped and
    an :class:`~sessionhive.events.EventsDropped` event says how many.
    """

    def __init__(self, hive: Hive, session_id: str, channel: ThreadChannel) -> None:
        self.session_id = session_id
        self._hive = hive
        self._channel = channel

    def __iter__(self) -> Iterator[AgentEvent]:
        while True:
            event = self._channel.get()
            if event is None:
                return
            yield event

    def get(self, timeout: float | None = None) -> AgentEvent | None:
        """The next event (``None`` when closed); raises ``TimeoutError`` after ``timeout``."""
        return self._channel.get(timeout)

    def close(self) -> None:
        self._hive._unsubscribe(self.session_id, self._channel)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hive:
    """Many concurrent agent sessions in one process.

    Start one with :meth:`start` (preferably as a context manager); every
    method takes ``timeout=`` (seconds; ``None`` waits for ever) and raises a
    :class:`~sessionhive.SessionhiveError` subclass on bad input.
    """

    def __init__(
        self,
        *,
        backend: ActorBackend,
        services: HiveServices,
        supervisor: pykka.ActorRef[Any],
        persistence: pykka.ActorRef[Any] | None,
        turn_loop: TurnLoop,
        tools: ToolExecutor,
        metrics: HiveMetrics,
        exporter: Any,
        call_timeout: float,
    ) -> None:
        self._backend = backend
        self._services = services
        self._supervisor = supervisor
        self._persistence = persistence
        self._turn_loop = turn_loop
        self._tools = tools
        self.metrics = metrics
        self._exporter = exporter
        self.call_timeout = call_timeout
        self._stopped = False

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def start(
        cls,
        store: Any = DEFAULT_STORE,
        llm: LlmConfig | LlmClient | None = None,
        workspace: str | os.PathLike[str] = ".",
        metrics: MetricsConfig | None = None,
        *,
        actor_backend: str | ActorBackend | None = None,
        tools: ToolExecutor | None = None,
        idle_timeout: float | None = None,
        max_live_sessions: int | None = None,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        max_concurrent_turns: int = 10_000,
        subscriber_queue_size: int = 1024,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> Hive:
        """Start the actors and return the facade.

        ``store`` is ``"sqlite:///sessionhive.db"`` (default), ``"memory"``,
        ``"file:DIR"``, any SQLAlchemy URL, or a store object. ``llm`` is the
        default model of sessions that configure none. ``idle_timeout`` and
        ``max_live_sessions`` passivate idle sessions (they come back on their
        next call). ``actor_backend`` is ``"pooled"`` (default: every actor's
        mailbox runs on a small fixed pool of threads) or ``"threads"`` (one
        OS thread per actor, pykka's ThreadingActor); the environment variable
        ``SESSIONHIVE_ACTOR_BACKEND`` sets the default. With ``"pooled"`` the
        supervisor and the persistence actor keep a thread each; pass a
        backend object (``PooledBackend(threads=1)``) to run every actor on it. ``batch_size`` and
        ``flush_interval`` tune the persistence batches (defaults 256 and
        0.05 s, chosen by ``bench/bench_persistence.py``).
        """
        from sessionhive.persistence import PersistenceActor, open_store
        from sessionhive.persistence.actor import ListIndex

        _check_positive("max_concurrent_turns", max_concurrent_turns, integer=True)
        _check_positive("subscriber_queue_size", subscriber_queue_size, integer=True)
        _check_positive("call_timeout", call_timeout)
        if idle_timeout is not None:
            _check_positive("idle_timeout", idle_timeout)
        if max_live_sessions is not None:
            _check_positive("max_live_sessions", max_live_sessions, integer=True)
        workspace_path = Path(workspace).resolve()
        if not workspace_path.is_dir():
            raise InvalidConfig(f"workspace {str(workspace_path)!r} is not a directory")
        metrics_config = metrics or MetricsConfig()
        hive_metrics = HiveMetrics(metrics_config.registry)
        llm_clients = ClientCache(hive_metrics)
        default_llm_config: LlmConfig | None = None
        default_llm: LlmClient | None = None
        if isinstance(llm, LlmConfig):
            default_llm_config, default_llm = llm.without_key(), llm_clients.get(llm)
        elif llm is not None:
            if not isinstance(llm, LlmClient):
                raise InvalidConfig("llm must be an LlmConfig, an LlmClient (such as ScriptedLlm) or None")
            default_llm = llm
            default_llm_config = (
                LlmConfig(llm.provider, llm.model)
                if llm.provider in ("openai", "anthropic", "scripted")
                else None
            )
        backend = _make_backend(actor_backend)
        opened = open_store(store)
        persistence_options: dict[str, Any] = {"metrics": hive_metrics}
        if batch_size is not None:
            persistence_options["batch_size"] = batch_size
        if flush_interval is not None:
            persistence_options["flush_interval"] = flush_interval
        # The persistence actor starts first (the supervisor needs its index),
        # so its failure callback finds the supervisor through this cell.
        supervisor_box: list[pykka.ActorRef[Any]] = []

        def on_persist_failure(session_id: str, error: str) -> None:
            if supervisor_box:
                from sessionhive.actors.session import _PersistFailed

                try:
                    supervisor_box[0].tell(Notify(session_id, _PersistFailed("save", error)))
                except pykka.ActorDeadError:
                    pass

        persistence_options["on_failure"] = on_persist_failure
        # With the "pooled" default the two singleton actors get a thread each:
        # every call passes through the supervisor, and the persistence actor
        # blocks on database I/O, so neither should wait in (or hold up) the
        # sessions' dispatcher pool. A backend object runs every actor.
        singletons = ThreadBackend() if _singletons_get_threads(actor_backend, backend) else backend
        persistence = singletons.spawn(PersistenceActor, opened, **persistence_options)
        index: Future[list[tuple[str, str | None]]] = Future()
        persistence.tell(ListIndex(index))
        try:
            stored = index.result(timeout=max(call_timeout, 60.0))
        except Exception as exc:
            persistence.stop()
            backend.shutdown()
            raise StoreError(f"cannot read the session index from {opened.name}: {exc}") from exc
        tool_executor = tools or ToolExecutor(workspace_path)
        turn_loop = TurnLoop(max_concurrent_turns)
        services = HiveServices(
            persistence=persistence,
            turn_loop=turn_loop,
            tools=tool_executor,
            workspace=workspace_path,
            metrics=hive_metrics,
            default_llm=default_llm,
            default_llm_config=default_llm_config,
            llm_clients=llm_clients,
            subscriber_queue_size=subscriber_queue_size,
        )
        supervisor = singletons.spawn(
            SupervisorActor,
            services,
            backend,
            stored,
            idle_timeout=idle_timeout,
            max_live_sessions=max_live_sessions,
        )
        supervisor_box.append(supervisor)
        exporter = None
        if metrics_config.port is not None:
            from sessionhive.metrics.exporter import MetricsServer

            exporter = MetricsServer(hive_metrics.registry, metrics_config.addr, metrics_config.port)
        return cls(
            backend=backend,
            services=services,
            supervisor=supervisor,
            persistence=persistence,
            turn_loop=turn_loop,
            tools=tool_executor,
            metrics=hive_metrics,
            exporter=exporter,
            call_timeout=call_timeout,
        )

    def stop(self, timeout: float | None = 60.0) -> None:
        """Cancel running turns, flush every pending snapshot, and stop every actor.

        Safe to call twice. Raises :class:`~sessionhive.StoreError` if the last
        flush failed (the snapshots that could not be written are reported).
        """
        if self._stopped:
            return
        self._stopped = True
        error: BaseException | None = None
        try:
            done: Future[None] = Future()
            self._supervisor.tell(Shutdown(done))
            _wait(done, timeout, "stopping the sessions")
        except (pykka.ActorDeadError, CallTimeout) as exc:
            log.warning("sessionhive: sessions did not stop cleanly: %s", exc)
        try:
            self._supervisor.stop(block=True, timeout=timeout)
        except pykka.Timeout:
            log.warning("sessionhive: the supervisor did not stop in time")
        if self._persistence is not None:
            try:
                self._flush(timeout)
            except Exception as exc:  # noqa: BLE001 - re-raised after everything stopped
                error = exc
            try:
                self._persistence.stop(block=True, timeout=timeout)
            except (pykka.Timeout, pykka.ActorDeadError):
                log.warning("sessionhive: the persistence actor did not stop in time")
        try:
            asyncio.run_coroutine_threadsafe(
                self._services.llm_clients.aclose(), self._turn_loop.loop
            ).result(10)
        except Exception as exc:  # noqa: BLE001 - closing connections is best effort
            log.debug("sessionhive: closing LLM clients: %s", exc)
        self._turn_loop.stop()
        close = getattr(self._tools, "close", None)
        if callable(close):
            close()
        if self._exporter is not None:
            self._exporter.close()
        if self.metrics.joined:
            self.metrics.unregister()  # a later Hive may join the same registry
        self._backend.shutdown()
        if error is not None:
            raise error

    def __enter__(self) -> Hive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def metrics_url(self) -> str | None:
        """``http://addr:port/metrics`` when started with ``MetricsConfig(port=...)``."""
        return self._exporter.url if self._exporter is not None else None

    def wsgi_app(self) -> Callable[..., Any]:
        """A WSGI app serving this Hive's metrics, to mount in your own server."""
        from prometheus_client import make_wsgi_app

        return make_wsgi_app(self.metrics.registry)

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving this Hive's metrics, to mount in your own server."""
        from prometheus_client import make_asgi_app

        return make_asgi_app(self.metrics.registry)

    # ------------------------------------------------------------------ plumbing

    def _timeout(self, timeout: float | Literal["default"] | None) -> float | None:
        return self.call_timeout if timeout == "default" else timeout

    def _tell_supervisor(self, message: Any) -> None:
        if self._stopped:
            raise HiveStopped()
        try:
            self._supervisor.tell(message)
        except pykka.ActorDeadError:
            raise HiveStopped() from None

    def _call_future(self, session_id: str, op: str, *args: Any) -> Future[Any]:
        check_id(session_id)
        future: Future[Any] = Future()
        self._tell_supervisor(Route(session_id, Call(op, args, future)))
        return future

    def _call(self, session_id: str, op: str, *args: Any, timeout: float | Literal["default"] | None) -> Any:
        future = self._call_future(session_id, op, *args)
        return _wait(future, self._timeout(timeout), f"{op}() on session {session_id!r}")

    def _query_future(self, kind: str, arg: str | None = None) -> Future[Any]:
        future: Future[Any] = Future()
        self._tell_supervisor(Query(kind, future, arg))
        return future

    def _create_future(
        self, session_id: str, config: SessionConfig | None, parent_id: str | None
    ) -> Future[str]:
        check_id(session_id)
        if parent_id is not None:
            check_id(parent_id, "parent session id")
        if config is None:
            config = SessionConfig()
        elif not isinstance(config, SessionConfig):
            raise InvalidConfig(f"config must be a SessionConfig, got {type(config).__name__}")
        future: Future[str] = Future()
        self._tell_supervisor(Create(session_id, config, parent_id, future))
        return future

    def _destroy_future(self, session_id: str) -> Future[None]:
        check_id(session_id)
        future: Future[None] = Future()
        self._tell_supervisor(Destroy(session_id, future))
        return future

    def _generate_futures(
        self, session_id: str, prompt: str, sink: ThreadChannel | AsyncChannel | None
    ) -> tuple[Future[AgentResult], Future[bool]]:
        if not isinstance(prompt, str):
            raise InvalidConfig(f"prompt must be a string, got {type(prompt).__name__}")
        accepted: Future[bool] = Future()
        result = self._call_future(session_id, "generate", prompt, sink, accepted)
        return result, accepted

    def _unsubscribe(self, session_id: str, channel: ThreadChannel | AsyncChannel) -> None:
        channel.close()
        if not self._stopped:
            try:
                self._supervisor.tell(Notify(session_id, Call("unsubscribe", (channel,))))
            except pykka.ActorDeadError:
                pass

    def _flush_future(self) -> Future[None]:
        from sessionhive.persistence.actor import Flush

        future: Future[None] = Future()
        if self._persistence is None:
            future.set_result(None)
            return future
        try:
            self._persistence.tell(Flush(future))
        except pykka.ActorDeadError:
            raise HiveStopped() from None
        return future

    def _flush(self, timeout: float | None) -> None:
        _wait(self._flush_future(), timeout, "flush()")

    def _health_future(self) -> Future[list[tuple[str, str]]]:
        from sessionhive.persistence.actor import Health

        future: Future[list[tuple[str, str]]] = Future()
        if self._persistence is None:
            future.set_result([])
            return future
        try:
            self._persistence.tell(Health(future))
        except pykka.ActorDeadError:
            raise HiveStopped() from None
        return future

    # ------------------------------------------------------------------ sessions

    def create_session(
        self,
        session_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: float | Literal["default"] | None = "default",
    ) -> str:
        """Create a session; raises :class:`~sessionhive.SessionExists` if the id is live or stored."""
        return _wait(
            self._create_future(session_id, config, None), self._timeout(timeout), "create_session()"
        )

    def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: float | Literal["default"] | None = "default",
    ) -> str:
        """Create a child (subagent) session; it inherits the parent's confirmation policy and LLM."""
        return _wait(
            self._create_future(child_id, config, parent_id), self._timeout(timeout), "create_child_session()"
        )

    def destroy_session(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> None:
        """Destroy a session and, first, all its descendants; it is deleted from the store too."""
        _wait(self._destroy_future(session_id), self._timeout(timeout), f"destroy_session({session_id!r})")

    def get_child_sessions(
        self, parent_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> list[str]:
        check_id(parent_id, "parent session id")
        result: list[str] = _wait(
            self._query_future("children", parent_id), self._timeout(timeout), "get_child_sessions()"
        )
        return result

    def is_child_session(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> bool:
        return bool(self._call(session_id, "is_child", timeout=timeout))

    def session_count(self, *, timeout: float | Literal["default"] | None = "default") -> int:
        """Sessions this Hive knows: live ones and those resting in the store."""
        count: int = _wait(self._query_future("count"), self._timeout(timeout), "session_count()")
        return count

    def live_session_count(self, *, timeout: float | Literal["default"] | None = "default") -> int:
        """Sessions with a live actor right now (the rest are passivated in the store)."""
        count: int = _wait(self._query_future("live_count"), self._timeout(timeout), "live_session_count()")
        return count

    def list_sessions(self, *, timeout: float | Literal["default"] | None = "default") -> list[str]:
        ids: list[str] = _wait(self._query_future("list"), self._timeout(timeout), "list_sessions()")
        return ids

    def list_tools(self) -> list[ToolDefinition]:
        return list(self._tools.definitions())

    def restore_session_by_id(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> None:
        """Make a stored session live now (any call would; this one does nothing else)."""
        self._call(session_id, "version", timeout=timeout)

    def load_all_sessions(self, *, timeout: float | Literal["default"] | None = None) -> int:
        """Activate every stored session; returns how many were loaded."""
        count: int = _wait(self._query_future("load_all"), self._timeout(timeout), "load_all_sessions()")
        return count

    # ------------------------------------------------------------------ turns

    def generate(self, session_id: str, prompt: str, *, timeout: float | None = None) -> AgentResult:
        """Run one turn and return its result; waits behind a turn already running.

        Raises :class:`~sessionhive.SessionPaused` on a paused session,
        :class:`~sessionhive.LlmNotConfigured` without an LLM,
        :class:`~sessionhive.TurnCancelled` if cancelled, and
        :class:`~sessionhive.TurnFailed` / :class:`~sessionhive.LlmError` when it failed.
        """
        result, _accepted = self._generate_futures(session_id, prompt, None)
        return _wait(result, timeout, f"generate() on session {session_id!r}")

    def generate_streaming(
        self, session_id: str, prompt: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> TurnStream:
        """Start a turn and return its :class:`TurnStream` once the session accepted it.

        ``timeout`` bounds the wait for acceptance, not the turn.
        """
        channel = ThreadChannel()
        result, accepted = self._generate_futures(session_id, prompt, channel)
        waitables: list[Future[Any]] = [result, accepted]
        done, _ = concurrent.futures.wait(
            waitables, self._timeout(timeout), concurrent.futures.FIRST_COMPLETED
        )
        if not done:
            raise CallTimeout(f"session {session_id!r} did not accept the turn in time")
        if result.done() and result.exception() is not None and not accepted.done():
            raise result.exception()  # type: ignore[misc]
        return TurnStream(self, session_id, channel, result)

    def history(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> list[Message]:
        messages: list[Message] = self._call(session_id, "history", timeout=timeout)
        return messages

    def context_usage(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> ContextUsage:
        usage: ContextUsage = self._call(session_id, "context_usage", timeout=timeout)
        return usage

    def usage(self, session_id: str, *, timeout: float | Literal["default"] | None = "default") -> Usage:
        """Tokens this session has spent, over all its turns and compactions."""
        usage: Usage = self._call(session_id, "usage", timeout=timeout)
        return usage

    def clear(self, session_id: str, *, timeout: float | Literal["default"] | None = "default") -> None:
        """Empty the history (after the running turn, if any, ends)."""
        self._call(session_id, "clear", timeout=timeout)

    def compact(self, session_id: str, *, timeout: float | None = None) -> None:
        """Compact the history now (after the running turn): summarise with the LLM, or keep the last 20."""
        self._call(session_id, "compact", timeout=timeout)

    def maybe_auto_compact(self, session_id: str, *, timeout: float | None = None) -> bool:
        """Compact if ``auto_compact`` is on and the context is past its threshold; returns whether it did."""
        return bool(self._call(session_id, "maybe_auto_compact", timeout=timeout))

    def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: float | Literal["default"] | None = "default",
    ) -> None:
        """Set thinking, its token budget, and the session's model (the key stays in memory only)."""
        self._call(session_id, "configure", thinking, budget, model_config, timeout=timeout)

    def get_llm_for_session(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> LlmConfig | None:
        """The model this session uses (its own, its parent's, or the Hive's), never with the API key."""
        config: LlmConfig | None = self._call(session_id, "get_llm_config", timeout=timeout)
        return config

    def pause_session(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> bool:
        """Pause: new turns are refused with SessionPaused; returns False if already paused."""
        return bool(self._call(session_id, "pause", timeout=timeout))

    def resume_session(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> bool:
        return bool(self._call(session_id, "resume", timeout=timeout))

    def cancel_operation(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> bool:
        """Cancel pending confirmations, queued turns and the running turn; True if anything was cancelled."""
        return bool(self._call(session_id, "cancel", timeout=timeout))

    def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        timeout: float | Literal["default"] | None = "default",
    ) -> bool:
        """Answer a ConfirmationRequired; raises ConfirmationNotFound for an id that does not wait."""
        if not isinstance(tool_id, str) or not tool_id:
            raise InvalidConfig("tool_id must be the non-empty id from a ConfirmationRequired event")
        return bool(self._call(session_id, "confirm", tool_id, bool(approved), reason, timeout=timeout))

    def pending_confirmations(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> list[str]:
        """Tool ids waiting for :meth:`confirm_tool`."""
        ids: list[str] = self._call(session_id, "pending_confirmations", timeout=timeout)
        return ids

    def set_confirmation_policy(
        self,
        session_id: str,
        policy: ConfirmationPolicy,
        *,
        timeout: float | Literal["default"] | None = "default",
    ) -> ConfirmationPolicy:
        if not isinstance(policy, ConfirmationPolicy):
            raise InvalidConfig("policy must be a ConfirmationPolicy")
        result: ConfirmationPolicy = self._call(session_id, "set_policy", policy, timeout=timeout)
        return result

    def get_confirmation_policy(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> ConfirmationPolicy:
        policy: ConfirmationPolicy = self._call(session_id, "get_policy", timeout=timeout)
        return policy

    def subscribe(
        self, session_id: str, *, timeout: float | Literal["default"] | None = "default"
    ) -> Subscription:
        """Receive every event of the session from now on (turns, compaction, persistence failures...)."""
        channel = ThreadChannel(
            self._services.subscriber_queue_size, self.metrics.events_dropped.inc, session_id
        )
        self._call(session_id, "subscribe", channel, timeout=timeout)
        return Subscription(self, session_id, channel)

    # ------------------------------------------------------------------ store

    def flush(self, timeout: float | None = None) -> None:
        """Durability barrier: returns once every change made before the call is committed."""
        self._flush(timeout)

    def store_health(
        self, *, timeout: float | Literal["default"] | None = "default"
    ) -> list[tuple[str, str]]:
        """``[(store name, "ok" | "error: ...")]`` for each store."""
        return _wait(self._health_future(), self._timeout(timeout), "store_health()")


def _check_positive(name: str, value: Any, *, integer: bool = False) -> None:
    number = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not number or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise InvalidConfig(f"{name} must be {kind}, got {value!r}")
