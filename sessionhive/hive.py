"""``Hive``: the synchronous facade, for threads.

Everything but waiting lives in :class:`~sessionhive._core.HiveCore`: a
call becomes a typed message sent straight to the session's mailbox (or
through the supervisor for a session that is not live), and ``Hive`` blocks
on the :class:`concurrent.futures.Future` it carries. Reads of a live
session (``history``, ``usage``...) answer from its published view without
a message. The actors run on a loop thread the Hive owns (asyncio backend)
or on their backend's threads; a call from another thread costs one hop
each way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from sessionhive._channels import ThreadChannel
from sessionhive._core import (
    DEFAULT_ACTOR_BACKEND,
    DEFAULT_STORE,
    HiveCore,
    HiveOptions,
    OnConfirmation,
    prepare,
)
from sessionhive.actors.directory import SessionView
from sessionhive.actors.messages import (
    Cancel,
    Clear,
    Compact,
    Configure,
    Confirm,
    MaybeAutoCompact,
    Pause,
    Resume,
    SetPolicy,
    Subscribe,
    Unsubscribe,
)
from sessionhive.api import (
    DEFAULT,
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAILBOX_SIZE,
    DEFAULT_MAX_CONCURRENT_TURNS,
    DEFAULT_RESTART_LIMIT,
    DEFAULT_RESTART_WINDOW,
    DEFAULT_STOP_TIMEOUT,
    DEFAULT_SUBSCRIBER_QUEUE_SIZE,
    Timeout,
)
from sessionhive.llm import LlmClient
from sessionhive.metrics.registry import HiveMetrics, MetricsConfig
from sessionhive.model.budget import Budget
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.confirmation import check_confirm_arguments
from sessionhive.model.errors import CallTimeout
from sessionhive.model.events import AgentEvent
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import AgentResult, ContextUsage, Message, ToolDefinition, Usage
from sessionhive.model.validate import check_instance
from sessionhive.runtime import ActorBackend, Reply
from sessionhive.tools import ToolExecutor

__all__ = [
    "DEFAULT_ACTOR_BACKEND",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MAILBOX_SIZE",
    "DEFAULT_STORE",
    "Hive",
    "Subscription",
    "TurnStream",
]

log = logging.getLogger("sessionhive")

T = TypeVar("T")

#: Activations tried by a read of a resting session before it gives up
#: (each one only repeats if the session was passivated again meanwhile).
_ACTIVATION_TRIES = 100


def _wait(core: HiveCore, reply: Reply, timeout: float | None, what: str) -> Any:
    if not isinstance(reply, concurrent.futures.Future):  # pragma: no cover - Hive never asks for one
        raise TypeError("Hive waits on thread-safe futures only")
    if not reply.done() and core.on_loop():
        raise RuntimeError(
            f"{what}: a blocking Hive call from the thread of the Hive's own event loop would wait for "
            "itself; await the AsyncHive method instead"
        )
    try:
        return reply.result(timeout)
    except concurrent.futures.TimeoutError:
        if reply.done():
            raise  # the operation itself failed with a TimeoutError: not ours to rename
        raise CallTimeout(f"{what} got no answer within {timeout} s (the work may still finish)") from None


class TurnStream:
    """The events of one turn as they happen, ending with TurnEnd, TurnError or TurnCancelled.

    Iterate it for the events; :meth:`result` waits for the :class:`AgentResult`
    (and raises :class:`~sessionhive.TurnCancelled`, :class:`~sessionhive.TurnFailed`
    or :class:`~sessionhive.LlmError` when the turn did not complete).
    """

    def __init__(self, hive: Hive, session_id: str, channel: ThreadChannel, result: Reply):
        self.session_id = session_id
        self._hive = hive
        self._channel = channel
        self._result = result

    def __iter__(self) -> Iterator[AgentEvent]:
        return iter(self._channel)

    def result(self, timeout: float | None = None) -> AgentResult:
        result: AgentResult = _wait(
            self._hive.core, self._result, timeout, f"the turn of session {self.session_id!r}"
        )
        return result

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
        return iter(self._channel)

    def get(self, timeout: float | None = None) -> AgentEvent | None:
        """The next event (``None`` when closed); raises ``TimeoutError`` after ``timeout``."""
        return self._channel.get(timeout)

    def close(self) -> None:
        self._channel.close()
        try:
            self._hive.core.send(self.session_id, Unsubscribe(None, self._channel))
        except Exception:  # noqa: BLE001 - the session or the Hive is gone: nothing left to detach
            pass

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hive:
    """Many concurrent agent sessions in one process.

    Start one with :meth:`start` (preferably as a context manager); every
    method takes ``timeout=`` (seconds; ``None`` waits for ever; the default
    is the Hive's ``call_timeout``) and raises a
    :class:`~sessionhive.SessionhiveError` subclass on bad input.
    """

    def __init__(self, core: HiveCore) -> None:
        self._core = core
        self.metrics: HiveMetrics = core.metrics

    @property
    def core(self) -> HiveCore:
        """The running actors and services this facade drives (shared with ``AsyncHive(hive)``)."""
        return self._core

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
        max_concurrent_turns: int = DEFAULT_MAX_CONCURRENT_TURNS,
        subscriber_queue_size: int = DEFAULT_SUBSCRIBER_QUEUE_SIZE,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        restart_limit: int = DEFAULT_RESTART_LIMIT,
        restart_window: float = DEFAULT_RESTART_WINDOW,
        shared_store: bool = False,
        allow_base_urls: Sequence[str] | None = None,
        trace_content: bool = False,
        budget: Budget | None = None,
    ) -> Hive:
        """Start the actors and return the facade.

        ``store`` is ``"sqlite:///sessionhive.db"`` (default), ``"memory"``,
        ``"file:DIR"``, any SQLAlchemy URL, or a store object. ``llm`` is the
        default model of sessions that configure none. ``actor_backend`` is
        ``"asyncio"`` (default: every actor on one event loop, here a loop
        thread the Hive owns), ``"pooled"`` (a fixed pool of dispatcher
        threads) or ``"threads"`` (one OS thread per actor); the environment
        variable ``SESSIONHIVE_ACTOR_BACKEND`` sets the default. A backend
        object (``PooledBackend(threads=1)``) runs the sessions and the
        supervisor on it; the persistence actor always keeps a thread of its
        own. ``idle_timeout`` and ``max_live_sessions`` passivate idle
        sessions (they come back on their next call). ``mailbox_size`` bounds
        the calls waiting for one session (past it: ``Overloaded``); a session
        that crashes more than ``restart_limit`` times in ``restart_window``
        seconds is marked failed until :meth:`reset_session`. ``shared_store=True``
        looks up in the store every id this Hive does not know (other
        processes write to the same store). ``batch_size``
        and ``flush_interval`` tune the persistence batches (defaults 256 and
        0.05 s, chosen by ``bench/bench_persistence.py``).

        ``allow_base_urls`` lists the endpoints a session's
        ``LlmConfig.base_url`` may name (prefixes: scheme, host, port, path),
        besides the base URL of ``llm``; any other raises
        :class:`~sessionhive.BaseUrlNotAllowed` before anything is sent.
        ``None`` (the default) accepts any endpoint but link-local and cloud
        metadata addresses. Whatever the list, the key of
        ``OPENAI_API_KEY``/``ANTHROPIC_API_KEY`` goes only to the provider's
        own endpoint and ``llm``'s base URL: a session naming another must
        carry its own key (see :mod:`sessionhive.llm.keys`).

        Turns, model calls, tools and confirmations are OpenTelemetry spans
        (see :mod:`sessionhive.metrics.tracing`) once the application installs
        an SDK; ``trace_content=True`` puts the prompt, answer and tool text
        in their attributes (off by default: they may hold personal data).

        ``budget`` caps the model spending of the whole Hive (of each tenant
        when ``sessionhive serve`` runs with tenant tokens), as
        ``SessionConfig.budget`` caps one session tree's.
        """
        options = HiveOptions(
            store=store,
            llm=llm,
            workspace=workspace,
            metrics=metrics,
            actor_backend=actor_backend,
            tools=tools,
            idle_timeout=idle_timeout,
            max_live_sessions=max_live_sessions,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_concurrent_turns=max_concurrent_turns,
            subscriber_queue_size=subscriber_queue_size,
            call_timeout=call_timeout,
            mailbox_size=mailbox_size,
            restart_limit=restart_limit,
            restart_window=restart_window,
            shared_store=shared_store,
            allow_base_urls=allow_base_urls,
            trace_content=trace_content,
            budget=budget,
        )
        return cls(HiveCore(prepare(options), None))

    def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
        """Cancel running turns, flush every pending snapshot, and stop every actor.

        Safe to call twice. Raises :class:`~sessionhive.StoreError` if the last
        flush failed (the snapshots that could not be written are reported).
        """
        core = self._core
        if core.stopped:
            return
        if core.on_loop():
            raise RuntimeError(
                "Hive.stop() from the Hive's own event loop would wait for itself; use AsyncHive.stop()"
            )
        error: BaseException | None = None
        try:
            _wait(core, core.shutdown_sessions(), timeout, "stopping the sessions")
        except CallTimeout as exc:
            log.warning("sessionhive: sessions did not stop cleanly: %s", exc)
        core.stopped = True
        try:
            core.supervisor.stop(block=True, timeout=timeout)
        except Exception:  # noqa: BLE001 - pykka.Timeout or already dead: go on stopping
            log.warning("sessionhive: the supervisor did not stop in time")
        try:
            _wait(core, core.flush(), timeout, "the last flush")
        except Exception as exc:  # noqa: BLE001 - re-raised after everything stopped
            error = exc
        core.stop_persistence(timeout)
        try:
            asyncio.run_coroutine_threadsafe(core.services.llm_clients.aclose(), core.turns.loop).result(10)
        except Exception as exc:  # noqa: BLE001 - closing connections is best effort
            log.debug("sessionhive: closing LLM clients: %s", exc)
        core.turns.stop()
        core.release()
        if error is not None:
            raise error

    def __enter__(self) -> Hive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def call_timeout(self) -> float:
        return self._core.call_timeout

    @property
    def metrics_url(self) -> str | None:
        """``http://addr:port/metrics`` when started with ``MetricsConfig(port=...)``."""
        exporter = self._core.exporter
        return exporter.url if exporter is not None else None

    def wsgi_app(self) -> Callable[..., Any]:
        """A WSGI app serving this Hive's metrics, to mount in your own server."""
        from prometheus_client import make_wsgi_app

        return make_wsgi_app(self.metrics.registry)

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving this Hive's metrics; mount it with Starlette's ``Route("/metrics", app)``."""
        from sessionhive.metrics.exporter import MetricsAsgiApp

        return MetricsAsgiApp(self.metrics.registry)

    # ------------------------------------------------------------------ plumbing

    def _wait(self, reply: Reply, timeout: Timeout, what: str) -> Any:
        return _wait(self._core, reply, self._core.timeout(timeout), what)

    def _view(self, session_id: str, timeout: Timeout) -> SessionView:
        core = self._core
        for _ in range(_ACTIVATION_TRIES):
            view = core.view(session_id)
            if view is not None:
                return view
            self._wait(
                core.activate(session_id, awaitable_here=False), timeout, f"activating session {session_id!r}"
            )
        raise CallTimeout(f"session {session_id!r} kept being passivated while it was read")

    # ------------------------------------------------------------------ sessions

    def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        """Create a session; raises :class:`~sessionhive.SessionExists` if the id is live or stored."""
        reply = self._core.create(session_id, config, None, exist_ok=False, awaitable_here=False)
        created: str = self._wait(reply, timeout, "create_session()")
        return created

    def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        """The session ``session_id``, created with ``config`` if it does not exist (live or stored)."""
        reply = self._core.create(session_id, config, None, exist_ok=True, awaitable_here=False)
        created: str = self._wait(reply, timeout, "get_or_create_session()")
        return created

    def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        """Create a child (subagent) session; it inherits the parent's confirmation policy and LLM."""
        reply = self._core.create(child_id, config, parent_id, exist_ok=False, awaitable_here=False)
        created: str = self._wait(reply, timeout, "create_child_session()")
        return created

    def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        """Destroy a session and, first, all its descendants; it is deleted from the store too."""
        self._wait(
            self._core.destroy(session_id, awaitable_here=False), timeout, f"destroy_session({session_id!r})"
        )

    def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        """Let a session marked failed (it crashed too often) take work again; True if it was failed."""
        return bool(
            self._wait(self._core.reset(session_id, awaitable_here=False), timeout, "reset_session()")
        )

    def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:  # noqa: ARG002 - read from the directory
        return self._core.children(parent_id)

    def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:  # noqa: ARG002 - read from the directory
        return self._core.is_child(session_id)

    def session_count(self, *, timeout: Timeout = DEFAULT) -> int:  # noqa: ARG002 - read from the directory
        """Sessions this Hive knows: live ones and those resting in the store."""
        return self._core.known_count()

    def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:  # noqa: ARG002 - read from the directory
        """Sessions with a live actor right now (the rest are passivated in the store)."""
        return self._core.live_count()

    def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        ids: list[str] = self._wait(
            self._core.list_sessions(awaitable_here=False), timeout, "list_sessions()"
        )
        return ids

    def list_tools(self) -> list[ToolDefinition]:
        return list(self._core.tools.definitions())

    def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        """Make a stored session live now (any call would; this one does nothing else)."""
        self._wait(self._core.activate(session_id, awaitable_here=False), timeout, "restore_session_by_id()")

    def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        """Activate every stored session; returns how many were loaded."""
        count: int = self._wait(self._core.load_all(awaitable_here=False), timeout, "load_all_sessions()")
        return count

    # ------------------------------------------------------------------ turns

    def generate(
        self,
        session_id: str,
        prompt: str,
        *,
        timeout: Timeout = None,
        on_confirmation: OnConfirmation | None = None,
    ) -> AgentResult:
        """Run one turn and return its result; waits behind a turn already running.

        ``on_confirmation(event) -> bool | (bool, reason)`` answers the
        turn's tool-call confirmations (it runs in a thread of its own and may
        ask a human). Raises :class:`~sessionhive.SessionPaused` on a paused
        session, :class:`~sessionhive.LlmNotConfigured` without an LLM,
        :class:`~sessionhive.TurnCancelled` if cancelled, and
        :class:`~sessionhive.TurnFailed` / :class:`~sessionhive.LlmError` when it failed.
        """
        result, _accepted = self._core.generate(
            session_id, prompt, None, on_confirmation, awaitable_here=False
        )
        value: AgentResult = self._wait(result, timeout, f"generate() on session {session_id!r}")
        return value

    def generate_streaming(
        self,
        session_id: str,
        prompt: str,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: OnConfirmation | None = None,
    ) -> TurnStream:
        """Start a turn and return its :class:`TurnStream` once the session accepted it.

        ``timeout`` bounds the wait for acceptance, not the turn.
        """
        channel = ThreadChannel()
        result, accepted = self._core.generate(
            session_id, prompt, channel, on_confirmation, awaitable_here=False
        )
        assert isinstance(result, concurrent.futures.Future) and isinstance(
            accepted, concurrent.futures.Future
        )
        done, _ = concurrent.futures.wait(
            [result, accepted], self._core.timeout(timeout), concurrent.futures.FIRST_COMPLETED
        )
        if not done:
            raise CallTimeout(f"session {session_id!r} did not accept the turn in time")
        error = result.exception() if result.done() and not accepted.done() else None
        if error is not None:
            raise error
        return TurnStream(self, session_id, channel, result)

    def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        return list(self._view(session_id, timeout).history)

    def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        return self._view(session_id, timeout).context_usage

    def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        """Tokens this session has spent, over all its turns and compactions."""
        return self._view(session_id, timeout).usage

    def _call(self, session_id: str, make: Callable[[Reply], Any], timeout: Timeout, what: str) -> Any:
        reply = self._core.call(session_id, make, awaitable_here=False)
        return self._wait(reply, timeout, f"{what} on session {session_id!r}")

    def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        """Empty the history (after the running turn, if any, ends)."""
        self._call(session_id, lambda r: Clear(r), timeout, "clear()")

    def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        """Compact the history now (after the running turn): summarise with the LLM, or keep the ends."""
        self._call(session_id, lambda r: Compact(r), timeout, "compact()")

    def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        """Compact if ``auto_compact`` is on and the context is past its threshold; returns whether it did."""
        return bool(self._call(session_id, lambda r: MaybeAutoCompact(r), timeout, "maybe_auto_compact()"))

    def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None:
        """Set thinking, its token budget, and the session's model (the key stays in memory only)."""
        self._call(session_id, lambda r: Configure(r, thinking, budget, model_config), timeout, "configure()")

    def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        """The model this session uses (its own, its parent's, or the Hive's), never with the API key."""
        return self._view(session_id, timeout).llm_config

    def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        """Pause: new turns are refused with SessionPaused; returns False if already paused."""
        return bool(self._call(session_id, lambda r: Pause(r), timeout, "pause_session()"))

    def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return bool(self._call(session_id, lambda r: Resume(r), timeout, "resume_session()"))

    def cancel_operation(
        self, session_id: str, *, reason: str | None = None, timeout: Timeout = DEFAULT
    ) -> bool:
        """Cancel pending confirmations, queued turns and the running turn; True if anything was cancelled.

        ``reason`` is what the cancelled turn says (``TurnCancelled.reason``); by default
        "cancelled by cancel_operation()".
        """
        message = (lambda r: Cancel(r)) if reason is None else (lambda r: Cancel(r, reason))
        return bool(self._call(session_id, message, timeout, "cancel_operation()"))

    def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        decided_by: str | None = None,
        timeout: Timeout = DEFAULT,
    ) -> bool:
        """Answer a ConfirmationRequired; raises ConfirmationNotFound for an id that does not wait.

        ``approved`` must be a bool. ``decided_by`` names who decided; the
        ``ConfirmationResolved`` event carries it.
        """
        check_confirm_arguments(tool_id, approved, reason, decided_by)
        return bool(
            self._call(
                session_id,
                lambda r: Confirm(r, tool_id, approved, reason, decided_by),
                timeout,
                "confirm_tool()",
            )
        )

    def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        """Tool ids waiting for :meth:`confirm_tool`."""
        return list(self._view(session_id, timeout).pending_confirmations)

    def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        check_instance("policy", policy, ConfirmationPolicy)
        result: ConfirmationPolicy = self._call(
            session_id, lambda r: SetPolicy(r, policy), timeout, "set_confirmation_policy()"
        )
        return result

    def get_confirmation_policy(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ConfirmationPolicy:
        return self._view(session_id, timeout).policy

    def subscribe(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Subscription:
        """Receive every event of the session from now on (turns, compaction, persistence failures...)."""
        channel = ThreadChannel(
            self._core.options.subscriber_queue_size, self.metrics.events_dropped.inc, session_id
        )
        self._call(session_id, lambda r: Subscribe(r, channel), timeout, "subscribe()")
        return Subscription(self, session_id, channel)

    # ------------------------------------------------------------------ store

    def flush(self, timeout: Timeout = None) -> None:
        """Durability barrier: returns once every change made before the call is committed."""
        self._wait(self._core.flush(), timeout, "flush()")

    def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        """``[(store name, "ok" | "error: ...")]`` for each store."""
        health: list[tuple[str, str]] = self._wait(self._core.health(), timeout, "store_health()")
        return health
