"""The Hive API, declared once: what every facade offers, with its arguments, defaults and results.

Six classes serve the same API: :class:`~sessionhive.Hive` and
:class:`~sessionhive.AsyncHive` in this process,
:class:`~sessionhive.client.RemoteHive` and
:class:`~sessionhive.client.AsyncRemoteHive` over HTTP, and the cluster pair
over Ray. :class:`HiveAPI` and :class:`AsyncHiveAPI` are that API as typing
protocols: code written against them runs on any facade, and
``tests/test_api_protocols.py`` assigns each facade to its protocol, so a
method dropped or changed on one of them fails ``mypy --strict``.

The timeout rule is declared here too, once: every ``timeout=`` takes a
:data:`Timeout`, and :func:`resolve_timeout` is the one place that turns
:data:`DEFAULT` into the facade's ``call_timeout``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Final, Literal, Protocol, TypeAlias

from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.confirmation import OnConfirmation
from sessionhive.model.content import Prompt
from sessionhive.model.events import AgentEvent
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import AgentResult, ContextUsage, Message, ToolDefinition, Usage
from sessionhive.model.output import OutputSchema
from sessionhive.model.runs import OnBusy, Run, Webhook
from sessionhive.model.validate import check_number

__all__ = [
    "DEFAULT",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MAILBOX_SIZE",
    "DEFAULT_MAX_CONCURRENT_TURNS",
    "DEFAULT_ON_BUSY",
    "DEFAULT_RESTART_LIMIT",
    "DEFAULT_RESTART_WINDOW",
    "DEFAULT_STOP_TIMEOUT",
    "DEFAULT_SUBSCRIBER_QUEUE_SIZE",
    "AsyncHiveAPI",
    "AsyncRunTurnStreamAPI",
    "AsyncRunsAPI",
    "AsyncSubscriptionAPI",
    "AsyncTurnStreamAPI",
    "Default",
    "HiveAPI",
    "RunTurnStreamAPI",
    "RunsAPI",
    "SubscriptionAPI",
    "Timeout",
    "TurnStreamAPI",
    "resolve_timeout",
]

# ---------------------------------------------------------------------- defaults

#: Seconds a call waits for its answer when ``timeout=`` is :data:`DEFAULT`.
DEFAULT_CALL_TIMEOUT: Final = 60.0
#: Seconds ``stop()`` waits for the sessions, the supervisor and the last flush.
DEFAULT_STOP_TIMEOUT: Final = 60.0
#: Calls waiting in one session's mailbox (and turns in its queue) before
#: further calls are refused with Overloaded.
DEFAULT_MAILBOX_SIZE: Final = 1024
#: Events a subscriber may fall behind by before the oldest are dropped.
DEFAULT_SUBSCRIBER_QUEUE_SIZE: Final = 1024
#: Turns running at once across the whole Hive.
DEFAULT_MAX_CONCURRENT_TURNS: Final = 10_000
#: Crashes within :data:`DEFAULT_RESTART_WINDOW` seconds before a session is marked failed.
DEFAULT_RESTART_LIMIT: Final = 3
DEFAULT_RESTART_WINDOW: Final = 60.0
#: What a turn does when its session is busy with another: wait for it (today's behaviour).
DEFAULT_ON_BUSY: Final[OnBusy] = "enqueue"

# ---------------------------------------------------------------------- timeouts

Default: TypeAlias = Literal["default"]
"""The type of :data:`DEFAULT`."""

# A string rather than an object() sentinel: it is what the HTTP service and
# the command line already take, so one spelling serves every facade, needs no
# import, and mypy still refuses a misspelt one.
DEFAULT: Final[Default] = "default"
"""Pass as ``timeout=`` (the default of most calls) to use the facade's ``call_timeout``."""

Timeout: TypeAlias = float | Default | None
"""Seconds; ``None`` waits for ever; :data:`DEFAULT` is the facade's ``call_timeout``."""


def resolve_timeout(timeout: Timeout, call_timeout: float) -> float | None:
    """Seconds to wait (``None``: for ever) for ``timeout``; InvalidConfig for anything but a Timeout.

    >>> resolve_timeout(DEFAULT, 60.0), resolve_timeout(None, 60.0), resolve_timeout(2, 60.0)
    (60.0, None, 2.0)
    """
    if timeout is None:
        return None
    if timeout == DEFAULT:
        return call_timeout
    return check_number("timeout", timeout, unit="seconds")


# ---------------------------------------------------------------------- streams


class TurnStreamAPI(Protocol):
    """The events of one turn as they happen; :meth:`result` waits for its outcome."""

    @property
    def session_id(self) -> str: ...

    def __iter__(self) -> Iterator[AgentEvent]: ...

    def result(self, timeout: float | None = None) -> AgentResult: ...

    def cancel(self) -> bool: ...


class SubscriptionAPI(Protocol):
    """A session's events from the subscription on, until :meth:`close`."""

    @property
    def session_id(self) -> str: ...

    def __iter__(self) -> Iterator[AgentEvent]: ...

    def get(self, timeout: float | None = None) -> AgentEvent | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> SubscriptionAPI: ...

    def __exit__(self, *exc: object) -> None: ...


class AsyncTurnStreamAPI(Protocol):
    """:class:`TurnStreamAPI` for coroutines."""

    @property
    def session_id(self) -> str: ...

    def __aiter__(self) -> AsyncIterator[AgentEvent]: ...

    async def result(self, timeout: float | None = None) -> AgentResult: ...

    async def cancel(self) -> bool: ...


class AsyncSubscriptionAPI(Protocol):
    """:class:`SubscriptionAPI` for coroutines."""

    @property
    def session_id(self) -> str: ...

    def __aiter__(self) -> AsyncIterator[AgentEvent]: ...

    async def get(self, timeout: float | None = None) -> AgentEvent | None: ...

    def close(self) -> None: ...

    async def __aenter__(self) -> AsyncSubscriptionAPI: ...

    async def __aexit__(self, *exc: object) -> None: ...


# ---------------------------------------------------------------------- runs (issue 21)
#
# The runs part of the API, named on its own for its documentation; HiveAPI and
# AsyncHiveAPI include it, so every facade (the HTTP and cluster ones too) serves it.


class RunTurnStreamAPI(TurnStreamAPI, Protocol):
    """A turn stream that names its run."""

    @property
    def run_id(self) -> str: ...


class AsyncRunTurnStreamAPI(AsyncTurnStreamAPI, Protocol):
    @property
    def run_id(self) -> str: ...


class RunsAPI(Protocol):
    """Runs: every turn is a :class:`~sessionhive.Run` with an id, a status and its events.

    ``idempotency_key`` names a run within its session: the same key with
    the same prompt is answered with that run (no second model call, also
    after a restart, for as long as the run's record is kept); with another
    prompt it raises :class:`~sessionhive.IdempotencyConflict`. ``on_busy``
    says what a turn does while the session runs another: ``"enqueue"``
    (wait), ``"reject"`` (:class:`~sessionhive.SessionBusy`),
    ``"interrupt"`` (cancel what runs and is queued, as
    ``cancel_operation`` does, then run) or ``"rollback"`` (the same, and the
    cancelled turn's messages leave the history).
    """

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
    ) -> AgentResult: ...

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
    ) -> RunTurnStreamAPI: ...

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
        """Start a turn and return its run once accepted (durable sessions: once its record committed).

        ``output_schema`` as for :meth:`HiveAPI.generate`: the completed run's
        ``output`` is the validated answer as JSON data.
        """

    def get_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> Run:
        """The run now; :class:`~sessionhive.RunNotFound` if unknown or no longer kept."""

    def wait_run(self, run_id: str, *, timeout: Timeout = None) -> Run:
        """The run once it finished; :class:`~sessionhive.CallTimeout` after ``timeout``."""

    def cancel_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        """Cancel a queued or running run; True if it was and now is cancelled."""

    def list_runs(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Run]:
        """The session's unfinished runs and its kept finished ones, oldest first."""

    def run_events(
        self, run_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> Iterator[AgentEvent]:
        """The run's kept events with ``event_id > after``, then its live ones, until its terminal event.

        Starts with an :class:`~sessionhive.events.EventsDropped` when events
        after ``after`` are no longer kept; the terminal event is never lost
        (rebuilt from the run's record when needed).
        """

    def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> SubscriptionAPI:
        """:meth:`HiveAPI.subscribe`, replaying the kept events with ``event_id > after`` first."""


class AsyncRunsAPI(Protocol):
    """:class:`RunsAPI` for coroutines; ``run_events`` is an async iterator (``async for``)."""

    async def generate(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = None,
        on_confirmation: OnConfirmation | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AgentResult: ...

    async def generate_streaming(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: OnConfirmation | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AsyncRunTurnStreamAPI: ...

    async def start_run(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        webhook: Webhook | None = None,
        timeout: Timeout = DEFAULT,
        output_schema: OutputSchema | None = None,
    ) -> Run: ...

    async def get_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> Run: ...

    async def wait_run(self, run_id: str, *, timeout: Timeout = None) -> Run: ...

    async def cancel_run(self, run_id: str, *, timeout: Timeout = DEFAULT) -> bool: ...

    async def list_runs(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Run]: ...

    def run_events(
        self, run_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> AsyncIterator[AgentEvent]: ...

    async def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> AsyncSubscriptionAPI: ...


# ---------------------------------------------------------------------- the Hive


class HiveAPI(RunsAPI, Protocol):
    """What :class:`~sessionhive.Hive`, ``RemoteHive`` and ``ClusterHive`` all offer (runs: :class:`RunsAPI`).

    Every ``timeout=`` is a :data:`Timeout`. Calls that may take as long as
    a turn (``generate``, ``compact``, ``load_all_sessions``, ``flush``) wait
    for ever by default; the others wait ``call_timeout``. A facade may take
    more (``Hive.confirm_tool``'s ``decided_by``; a service names who decided
    from the caller's token), never less.
    """

    @property
    def call_timeout(self) -> float: ...

    def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None:
        """Cancel running turns, flush every pending snapshot, and stop every actor.

        Safe to call twice. Raises :class:`~sessionhive.StoreError` if the last
        flush failed (the snapshots that could not be written are reported).
        """

    def __enter__(self) -> HiveAPI: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    # sessions
    def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        """Create a session; raises :class:`~sessionhive.SessionExists` if the id is live or stored."""

    def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str:
        """The session ``session_id``, created with ``config`` if it does not exist (live or stored)."""

    def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str:
        """Create a child (subagent) session; it inherits the parent's confirmation policy and LLM."""

    def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        """Destroy a session and, first, all its descendants; it is deleted from the store too."""

    def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        """Let a session marked failed (it crashed too often) take work again; True if it was failed."""

    def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]: ...

    def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool: ...

    def session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        """Sessions this Hive knows: live ones and those resting in the store."""

    def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int:
        """Sessions with a live actor right now (the rest are passivated in the store)."""

    def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]: ...

    def list_tools(self) -> list[ToolDefinition]: ...

    def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        """Make a stored session live now (any call would; this one does nothing else)."""

    def load_all_sessions(self, *, timeout: Timeout = None) -> int:
        """Activate every stored session; returns how many were loaded."""

    # turns
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
        """Run one turn and return its result; waits behind a turn already running.

        ``on_confirmation(event) -> bool | (bool, reason)`` answers the
        turn's tool-call confirmations (it may ask a human: a plain function
        runs off the actors' loop; the async facades also take a coroutine
        function). Raises :class:`~sessionhive.SessionPaused` on a paused
        session, :class:`~sessionhive.LlmNotConfigured` without an LLM,
        :class:`~sessionhive.TurnCancelled` if cancelled, and
        :class:`~sessionhive.TurnFailed` / :class:`~sessionhive.LlmError` when it failed.

        ``output_schema`` (a JSON Schema dict or a pydantic model class) asks
        for a structured answer: ``AgentResult.output`` holds it validated
        (a model instance, or the JSON value), after at most one repair
        round; else :class:`~sessionhive.OutputInvalid`.
        """

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
    ) -> RunTurnStreamAPI:
        """Start a turn and return its :class:`RunTurnStreamAPI` once the session accepted it.

        ``timeout`` bounds the wait for acceptance, not the turn.
        """

    def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]: ...

    def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage: ...

    def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage:
        """Tokens this session has spent, over all its turns and compactions."""

    def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None:
        """Empty the history (after the running turn, if any, ends)."""

    def compact(self, session_id: str, *, timeout: Timeout = None) -> None:
        """Compact the history now (after the running turn): summarise with the LLM, or keep the ends."""

    def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool:
        """Compact if ``auto_compact`` is on and the context is past its threshold; returns whether it did."""

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

    def get_llm_for_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> LlmConfig | None:
        """The model this session uses (its own, its parent's, or the Hive's), never with the API key."""

    def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        """Pause: new turns are refused with SessionPaused; returns False if already paused."""

    def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool: ...

    def cancel_operation(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool:
        """Cancel pending confirmations, queued turns and the running turn; True if anything was cancelled."""

    # confirmations
    def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> bool:
        """Answer a ConfirmationRequired; raises ConfirmationNotFound for an id that does not wait.

        ``approved`` must be a bool (``"no"`` is refused, not read as true).
        """

    def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]:
        """Tool ids waiting for :meth:`confirm_tool`."""

    def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy: ...

    def get_confirmation_policy(
        self, session_id: str, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy: ...

    # events and the store
    def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> SubscriptionAPI:
        """Receive every event of the session from now on (turns, compaction, persistence failures...);
        with ``after``, the kept events with a larger ``event_id`` first."""

    def flush(self, timeout: Timeout = None) -> None:
        """Durability barrier: returns once every change made before the call is committed."""

    def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]:
        """``[(store name, "ok" | "error: ...")]`` for each store."""


class AsyncHiveAPI(AsyncRunsAPI, Protocol):
    """:class:`HiveAPI` as coroutines: what ``AsyncHive``, ``AsyncRemoteHive`` and ``AsyncClusterHive`` offer.

    Each method means what its namesake on :class:`HiveAPI` documents.

    ``list_tools`` is left out: ``AsyncHive`` answers it without waiting
    (a plain method), ``AsyncRemoteHive`` must ask the service (a coroutine).
    """

    @property
    def call_timeout(self) -> float: ...

    async def stop(self, timeout: float | None = DEFAULT_STOP_TIMEOUT) -> None: ...

    async def __aenter__(self) -> AsyncHiveAPI: ...

    async def __aexit__(self, *exc: object) -> None: ...

    # sessions
    async def create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str: ...

    async def get_or_create_session(
        self, session_id: str, config: SessionConfig | None = None, *, timeout: Timeout = DEFAULT
    ) -> str: ...

    async def create_child_session(
        self,
        parent_id: str,
        child_id: str,
        config: SessionConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> str: ...

    async def destroy_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None: ...

    async def reset_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool: ...

    async def get_child_sessions(self, parent_id: str, *, timeout: Timeout = DEFAULT) -> list[str]: ...

    async def is_child_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool: ...

    async def session_count(self, *, timeout: Timeout = DEFAULT) -> int: ...

    async def live_session_count(self, *, timeout: Timeout = DEFAULT) -> int: ...

    async def list_sessions(self, *, timeout: Timeout = DEFAULT) -> list[str]: ...

    async def restore_session_by_id(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None: ...

    async def load_all_sessions(self, *, timeout: Timeout = None) -> int: ...

    # turns
    async def generate(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = None,
        on_confirmation: OnConfirmation | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AgentResult: ...

    async def generate_streaming(
        self,
        session_id: str,
        prompt: Prompt,
        *,
        timeout: Timeout = DEFAULT,
        on_confirmation: OnConfirmation | None = None,
        idempotency_key: str | None = None,
        on_busy: OnBusy = DEFAULT_ON_BUSY,
        output_schema: OutputSchema | None = None,
    ) -> AsyncRunTurnStreamAPI: ...

    async def history(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[Message]: ...

    async def context_usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> ContextUsage: ...

    async def usage(self, session_id: str, *, timeout: Timeout = DEFAULT) -> Usage: ...

    async def clear(self, session_id: str, *, timeout: Timeout = DEFAULT) -> None: ...

    async def compact(self, session_id: str, *, timeout: Timeout = None) -> None: ...

    async def maybe_auto_compact(self, session_id: str, *, timeout: Timeout = None) -> bool: ...

    async def configure(
        self,
        session_id: str,
        thinking: bool | None = None,
        budget: int | None = None,
        model_config: LlmConfig | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> None: ...

    async def get_llm_for_session(
        self, session_id: str, *, timeout: Timeout = DEFAULT
    ) -> LlmConfig | None: ...

    async def pause_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool: ...

    async def resume_session(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool: ...

    async def cancel_operation(self, session_id: str, *, timeout: Timeout = DEFAULT) -> bool: ...

    # confirmations
    async def confirm_tool(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> bool: ...

    async def pending_confirmations(self, session_id: str, *, timeout: Timeout = DEFAULT) -> list[str]: ...

    async def set_confirmation_policy(
        self, session_id: str, policy: ConfirmationPolicy, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy: ...

    async def get_confirmation_policy(
        self, session_id: str, *, timeout: Timeout = DEFAULT
    ) -> ConfirmationPolicy: ...

    # events and the store
    async def subscribe(
        self, session_id: str, *, after: int | None = None, timeout: Timeout = DEFAULT
    ) -> AsyncSubscriptionAPI: ...

    async def flush(self, timeout: Timeout = None) -> None: ...

    async def store_health(self, *, timeout: Timeout = DEFAULT) -> list[tuple[str, str]]: ...
