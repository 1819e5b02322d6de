"""``Hive``: the synchronous facade, for threads.

Everything but waiting lives in :class:`~sessionhive._core.HiveCore`: a
call becomes a typed message sent straight to the session's mailbox (or
through the supervisor for a session that is not live), and ``Hive`` blocks
on the :class:`concurrent.futures.Future` it carries. Reads of a live
session (``history``, ``usage``...) answer from its published view without
a message. The actors run on a loop thread the Hive owns (asyncio backend)
or on their backend's threads; a call from another thread costs one hop
each way. Each method is documented once, on :class:`~sessionhive.api.HiveAPI`.
:class:`LocalFacade` holds what ``Hive`` and ``AsyncHive`` answer alike, without waiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sessionhive._channels import ThreadChannel
from sessionhive._core import (
    CLIENT_CLOSE_TIMEOUT,
    HiveCore,
    OnConfirmation,
    Pending,
    launch,
)
from sessionhive._startup import DEFAULT_ACTOR_BACKEND, DEFAULT_STORE, HiveOptions, taking
from sessionhive.actors.directory import SessionView
from sessionhive.api import (
    DEFAULT,
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAILBOX_SIZE,
    DEFAULT_ON_BUSY,
    DEFAULT_STOP_TIMEOUT,
    Timeout,
)
from sessionhive.metrics.registry import HiveMetrics
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.content import Prompt
from sessionhive.model.errors import CallTimeout
from sessionhive.model.events import AgentEvent
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import AgentResult, ContextUsage, Message, ToolDefinition, Usage
from sessionhive.model.output import OutputSchema
from sessionhive.model.runs import OnBusy, Run, Webhook

__all__ = [
    "DEFAULT_ACTOR_BACKEND",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MAILBOX_SIZE",
    "DEFAULT_STORE",
    "Hive",
    "LocalFacade",
    "Subscription",
    "TurnStream",
]

log = logging.getLogger("sessionhive")

T = TypeVar("T")


def _block(core: HiveCore, pending: Pending[T], timeout: float | None) -> T:
    reply = pending.reply
    if not isinstance(reply, concurrent.futures.Future):  # pragma: no cover - Hive never asks for one
        raise TypeError("Hive waits on thread-safe futures only")
    if not reply.done() and core.on_loop():
        raise RuntimeError(
            f"{pending.what()}: a blocking Hive call from the thread of the Hive's own event loop would "
            "wait for itself; await the AsyncHive method instead"
        )
    try:
        value: T = reply.result(timeout)
    except concurrent.futures.TimeoutError:
        if reply.done():
            raise  # the operation itself failed with a TimeoutError: not ours to rename
        raise pending.timed_out(timeout) from None
    return value


class LocalFacade:
    """What ``Hive`` and ``AsyncHive`` answer alike, without waiting: httpx's ``BaseClient`` part.

    The two facades differ only in how they wait; everything here waits for nothing.
    """

    #: Activations a read of a resting session tries before it gives up (each one only
    #: repeats if the session was passivated again meanwhile).
    _activation_tries = 100

    def __init__(self, core: HiveCore) -> None:
        self._core = core
        self.metrics: HiveMetrics = core.metrics

    @property
    def core(self) -> HiveCore:
        """The running actors and services this facade drives (``AsyncHive(hive)`` shares them)."""
        return self._core

    def list_tools(self) -> list[ToolDefinition]:
        """The tools every session may call (answered here: a plain method on both facades)."""
        return list(self._core.tools.definitions())

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


class TurnStream:
    """The events of one turn as they happen, ending with TurnEnd, TurnError or TurnCancelled.

    Iterate it for the events; :meth:`result` waits for the :class:`AgentResult`
    (and raises :class:`~sessionhive.TurnCancelled`, :class:`~sessionhive.TurnFailed`
    or :class:`~sessionhive.LlmError` when the turn did not complete).
    ``run_id`` names the turn's run (``get_run``, ``run_events``).
    """

    def __init__(
        self, hive: Hive, session_id: str, channel: ThreadChannel, result: Pending[AgentResult], run_id: str
    ) -> None:
        self.session_id = session_id
        self.run_id = run_id
        self._hive = hive
        self._channel = channel
        self._result = result

    def __iter__(self) -> Iterator[AgentEvent]:
        return iter(self._channel)

    def result(self, timeout: float | None = None) -> AgentResult:
        return _block(self._hive.core, self._result, timeout)

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
        self._hive.core.unsubscribe(self.session_id, self._channel)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start(options: HiveOptions) -> Hive:
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

    ``max_finished_runs`` is how many finished runs (and their idempotency
    keys) each session keeps, besides its unfinished ones.

    ``webhook_secret`` signs the webhook deliveries of finished runs
    (``start_run(..., webhook=Webhook(url))``) whose webhook has no secret
    of its own, or lost it in a restart (a webhook's secret is kept in
    memory only); see :mod:`sessionhive.actors.webhooks`.

    ``budget`` caps the model spending of the whole Hive (of each tenant
    when ``sessionhive serve`` runs with tenant tokens), as
    ``SessionConfig.budget`` caps one session tree's.
    """
    return Hive(launch(options))


class Hive(LocalFacade):
    """Many concurrent agent sessions in one process: :class:`~sessionhive.api.HiveAPI`, for threads.

    Start one with :meth:`start` (preferably as a context manager); every
    method takes ``timeout=`` (seconds; ``None`` waits for ever; the default
    is the Hive's ``call_timeout``) and raises a
    :class:`~sessionhive.SessionhiveError` subclass on bad input.
    """

    _here = False  # a thread blocks on a thread-safe future, never on the loop's own

    start = staticmethod(taking(HiveOptions, _start))

    # ------------------------------------------------------------------ life cycle

    def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
        core = self._core
        if core.stopped:
            return
        if core.on_loop():
            raise RuntimeError(
                "Hive.stop() from the Hive's own event loop would wait for itself; use AsyncHive.stop()"
            )
        error: BaseException | None = None
        try:
            _block(core, core.shutdown_sessions(), timeout)
        except CallTimeout as exc:
            log.warning("sessionhive: sessions did not stop cleanly: %s", exc)
        core.stopped = True
        try:
            core.supervisor.stop(block=True, timeout=timeout)
        except Exception:  # noqa: BLE001 - pykka.Timeout or already dead: go on stopping
            log.warning("sessionhive: the supervisor did not stop in time")
        try:
            _block(core, core.flush(), timeout)
        except Exception as exc:  # noqa: BLE001 - re-raised after everything stopped
            error = exc
        core.stop_persistence(timeout)
        try:
            asyncio.run_coroutine_threadsafe(core.services.llm_clients.aclose(), core.turns.loop).result(
                CLIENT_CLOSE_TIMEOUT
            )
        except Exception as exc:  # noqa: BLE001 - closing connections is best effort
            log.debug("sessionhive: closing LLM clients: %s", exc)
        core.turns.stop()
        core.release()
        if error is not None:
            raise error

    def __enter__(self) -> Hive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ plumbing

    def _wait(self, pending: Pending[T], timeout: Timeout) -> T:
        return _block(self._core, pending, self._core.timeout(timeout))

    def _view(self, session_id: str, timeout: Timeout) -> SessionView:
        for _ in range(self._activation_tries):
            view = self._core.view_or_activation(session_id, self._here)
            if isinstance(view, SessionView):
                return view
            self._wait(view, timeout)
        raise self._core.kept_passivating(session_id)

    # ------------------------------------------------------------------ sessions

    def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        return self._wait(self._core.create(session_id, config, None, False, self._here), timeout)

    def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        return self._wait(self._core.create(session_id, config, None, True, self._here), timeout)

    def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        return self._wait(self._core.create(child_id, config, parent_id, False, self._here), timeout)

    def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        self._wait(self._core.destroy(session_id, self._here), timeout)

    def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._wait(self._core.reset(session_id, self._here), timeout)

    # Directory reads: answered here from the published directory, without waiting, so timeout is unused.

    def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:  # noqa: ARG002
        return self._core.children(parent_id)

    def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:  # noqa: ARG002
        return self._core.is_child(session_id)

    def session_count(self, *, timeout: Timeout = DEFAULT) -> int:  # noqa: ARG002
        return self._core.known_count()

    def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:  # noqa: ARG002
        return self._core.live_count()

    def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]:
        return self._wait(self._core.list_sessions(self._here), timeout)

    def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        self._wait(self._core.activate(session_id, self._here), timeout)

    def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        return self._wait(self._core.load_all(self._here), timeout)

    # ------------------------------------------------------------------ turns

    def generate(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = None,
        on_confirmation: OnConfirmation | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AgentResult:
        """Run one turn (see :class:`HiveAPI`, :class:`RunsAPI`); ``on_confirmation`` runs in a thread."""
        pending, _accepted = self._core.generate(
            session_id, prompt, None, on_confirmation, self._here, idempotency_key, on_busy, output_schema
        )
        return self._wait(pending, timeout)

    def generate_streaming(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: OnConfirmation | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> TurnStream:
        channel = ThreadChannel()
        result, accepted = self._core.generate(
            session_id, prompt, channel, on_confirmation, self._here, idempotency_key, on_busy, output_schema
        )
        turn = result.reply
        assert isinstance(turn, concurrent.futures.Future) and isinstance(accepted, concurrent.futures.Future)
        waited = [turn, accepted]
        done, _ = concurrent.futures.wait(
            waited, self._core.timeout(timeout), concurrent.futures.FIRST_COMPLETED
        )
        if not done:
            raise self._core.turn_not_accepted(session_id)
        if not accepted.done():
            error = turn.exception()
            if error is not None:
                raise error
        # Answered before the turn's result (the acceptance commits first), so this does not wait long.
        run: Run = accepted.result(self._core.timeout(timeout))
        return TurnStream(self, session_id, channel, result, run.run_id)

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        webhook: Webhook | None = None,
        timeout: Timeout = DEFAULT,
        output_schema: OutputSchema | None = None,
    ) -> Run:
        pending = self._core.start_run(
            session_id, prompt, idempotency_key, on_busy, webhook, self._here, output_schema
        )
        return self._wait(pending, timeout)

    def get_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> Run:
        return self._wait(self._core.get_run(run_id, self._here), timeout)

    def wait_run(self, run_id: str, *, timeout: Timeout = None) -> Run:
        return self._wait(self._core.wait_run(run_id, self._here), timeout)

    def cancel_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._wait(self._core.cancel_run(run_id, self._here), timeout)

    def list_runs(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Run]:
        return self._wait(self._core.list_runs(session_id, self._here), timeout)

    def run_events(
        self, run_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> Iterator[AgentEvent]:
        """See :meth:`RunsAPI.run_events`; ``timeout`` bounds the wait for the session to start the replay."""
        channel = ThreadChannel()
        self._wait(self._core.run_events(run_id, after, channel, self._here), timeout)
        return iter(channel)

    def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]:
        view = self._view(session_id, timeout)
        return [*view.history, *view.in_progress]

    def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage:
        return self._view(session_id, timeout).context_usage

    def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        return self._view(session_id, timeout).usage

    def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        self._wait(self._core.clear(session_id, self._here), timeout)

    def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        self._wait(self._core.compact(session_id, self._here), timeout)

    def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        return self._wait(self._core.maybe_auto_compact(session_id, self._here), timeout)

    def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None:
        self._wait(self._core.configure(session_id, thinking, budget, model_config, self._here), timeout)

    def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        return self._view(session_id, timeout).llm_config

    def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._wait(self._core.pause(session_id, self._here), timeout)

    def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        return self._wait(self._core.resume(session_id, self._here), timeout)

    def cancel_operation(
        self, session_id: str, *, reason: str | None = None, timeout: Timeout = DEFAULT
    ) -> bool:
        """See :meth:`HiveAPI.cancel_operation`; ``reason`` is what the cancelled turn says
        (``TurnCancelled.reason``), by default "cancelled by cancel_operation()".
        """
        return self._wait(self._core.cancel(session_id, reason, self._here), timeout)

    # ------------------------------------------------------------------ confirmations

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
        """See :meth:`HiveAPI.confirm_tool`; ``decided_by`` names who decided (the event carries it)."""
        confirm = self._core.confirm(session_id, tool_id, approved, reason, decided_by, self._here)
        return self._wait(confirm, timeout)

    def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        return list(self._view(session_id, timeout).pending_confirmations)

    def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy:
        return self._wait(self._core.set_policy(session_id, policy, self._here), timeout)

    def get_confirmation_policy(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ConfirmationPolicy:
        return self._view(session_id, timeout).policy

    # ------------------------------------------------------------------ events and the store

    def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> Subscription:
        """See :meth:`HiveAPI.subscribe`; ``after``: first replay the kept events with larger ids."""
        channel = ThreadChannel(*self._core.subscriber_queue(session_id))
        self._wait(self._core.subscribe(session_id, channel, self._here, after), timeout)
        return Subscription(self, session_id, channel)

    def flush(self, timeout: Timeout = None) -> None:
        self._wait(self._core.flush(), timeout)

    def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        return self._wait(self._core.health(), timeout)
