"""What the SDK-backed clients share: the retry policy, error wording, metrics and key handling.

:class:`~sessionhive.llm.openai.OpenAiClient` and
:class:`~sessionhive.llm.anthropic.AnthropicClient` both build on
:class:`SdkClientBase`. The SDKs' own retries are switched off
(``max_retries=0``) so that one policy, here, decides:

* transient failures (connection errors, timeouts, 408, 409, 429, 5xx,
  Anthropic's 529 "overloaded") are retried up to ``LlmConfig.max_retries``
  times, with exponential backoff and full jitter;
* a ``Retry-After`` (or ``retry-after-ms``) header from the server replaces
  the backoff for that wait, capped by :attr:`RetryPolicy.max_retry_after_s`;
* an ``x-should-retry`` header, when the server sends one, overrides the
  status-code rule;
* everything else (bad key, unknown model, invalid request) raises
  :class:`~sessionhive.LlmError` at once, with a message that says what to fix.

A stream is retried only while nothing has reached ``on_text``: once text was
delivered, a retry would deliver it twice, so a stream that breaks after its
first text delta raises :class:`~sessionhive.LlmError` instead.

The API key is held in a :class:`Secret` and only handed to the SDK. It is
never part of a ``repr``, a log record, an exception message or a metric
label; server error messages are scrubbed of it before they are quoted.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import re
import sys
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from tenacity import RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.asyncio import AsyncRetrying
from tenacity.wait import wait_base, wait_random_exponential

from sessionhive.llm.base import LlmRequest, LlmResponse, TextCallback
from sessionhive.llm.fallback import Overloaded
from sessionhive.llm.keys import EndpointKeys, ProviderEndpoint, resolve_key
from sessionhive.llm.limits import account_limiter, estimate_tokens
from sessionhive.metrics import tracing
from sessionhive.model.errors import InvalidConfig, LlmError
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.urls import shown_url

if TYPE_CHECKING:
    from sessionhive.metrics.registry import HiveMetrics

__all__ = [
    "CallProgress",
    "MalformedResponseError",
    "RetryPolicy",
    "SdkClientBase",
    "Secret",
    "TransientError",
    "call_with_retries",
    "decode_arguments",
    "redact",
    "retry_after_seconds",
    "sdk_missing",
    "server_message",
    "transport_errors",
]

logger = logging.getLogger("sessionhive.llm")

T = TypeVar("T")
SdkT = TypeVar("SdkT")


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait between tries of an LLM call.

    The number of retries comes from ``LlmConfig.max_retries``; this says how
    long each wait is. The n-th wait (n from 0) is a random time in
    ``[0, min(max_wait_s, initial_wait_s * 2**n)]`` (full jitter, so that many
    sessions hitting the same rate limit do not retry in lockstep), unless the
    server sent ``Retry-After``: then that many seconds, at most
    ``max_retry_after_s``.
    """

    initial_wait_s: float = 0.5
    max_wait_s: float = 20.0
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("initial_wait_s", "max_wait_s", "max_retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidConfig(f"RetryPolicy.{name} must be a finite number of seconds, got {value!r}")
            if value < 0:
                raise InvalidConfig(f"RetryPolicy.{name} must be >= 0, got {value!r}")


class Secret:
    """A string that does not show itself: ``repr`` and ``str`` print ``'***'``.

    Holding the API key in one keeps it out of debug dumps of the client's
    attributes; :meth:`reveal` is called only where the SDK needs it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class TransientError(Exception):
    """One attempt failed in a way another attempt may fix.

    Raised inside an attempt and consumed by :func:`call_with_retries`; it never
    reaches the caller (the last one becomes an :class:`~sessionhive.LlmError`).
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.status = status
        self.timed_out = timed_out

    def is_overload(self, long_wait_s: float) -> bool:
        """Whether this failure means the model is overloaded: 503, 529, a timeout, or a 429 asking to
        wait longer than ``long_wait_s``; a fallback model is then worth more than a retry."""
        if self.timed_out or self.status in (503, 529):
            return True
        return self.status == 429 and self.retry_after is not None and self.retry_after > long_wait_s


class MalformedResponseError(Exception):
    """The server answered, but not in the shape of the provider's API."""


@dataclass
class CallProgress:
    """What one attempt has done that cannot be undone: deliver text to ``on_text``."""

    on_text: TextCallback | None = None
    text_delivered: bool = False

    def emit(self, text: str) -> None:
        if not text or self.on_text is None:
            return
        self.text_delivered = True
        try:
            self.on_text(text)
        except BaseException as exc:
            raise _CallbackError(exc) from exc


class _CallbackError(Exception):
    """``on_text`` raised: its exception goes back to the caller untouched, never retried."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: datetime | None = None) -> float | None:
    """The wait a server asked for, in seconds, or ``None``.

    Reads ``retry-after-ms`` (sent by OpenAI) and ``Retry-After`` as seconds
    (``"2"``, ``"0.5"``) or as an HTTP date. A date in the past means ``0``;
    an unreadable or negative value is ignored.
    """
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now if now is not None else datetime.now(UTC)
        return max(0.0, (when - current).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# Key-shaped tokens: what providers echo back, partly masked, in 401 bodies.
_KEY_LIKE = re.compile(r"\b(sk|sk-ant|sk-proj|key)-[A-Za-z0-9_\-*]{4,}")


def transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP library's transport errors, which an SDK may let through unwrapped from a stream.

    ``httpx2`` for the current SDKs, ``httpx`` for older ones: whichever the
    SDKs imported.
    """
    errors: list[type[Exception]] = []
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        error = getattr(module, "TransportError", None)
        if isinstance(error, type) and issubclass(error, Exception):
            errors.append(error)
    return tuple(errors)


def redact(text: str, secret: Secret | str | None) -> str:
    """``text`` with the key, and anything shaped like an API key, replaced by ``***``."""
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if value:
        text = text.replace(value, "***")
    return _KEY_LIKE.sub("***", text)


def sdk_missing(sdk: str) -> ImportError:
    """What a provider module raises when its SDK is not installed: how to install it."""
    return ImportError(f"the {sdk!r} provider needs the {sdk} SDK: pip install 'sessionhive[{sdk}]'")


def decode_arguments(raw: str | None) -> dict[str, Any] | str:
    """Tool-call arguments as a dict, or the raw string when they are not a JSON object."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, dict) else raw


def server_message(body: object, *, limit: int = 300) -> str | None:
    """The human-readable message of a provider's JSON error body, if it has one.

    Handles OpenAI's ``{"error": {"message": ...}}`` (the SDK hands over the
    inner object), Anthropic's ``{"type": "error", "error": {"message": ...}}``
    and plain-text bodies.
    """
    message: object = None
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping):
            message = inner.get("message")
        elif isinstance(inner, str):
            message = inner
        if message is None:
            message = body.get("message")
    elif isinstance(body, str):
        message = body
    if not isinstance(message, str) or not message.strip():
        return None
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


class _Wait(wait_base):
    """Exponential backoff with full jitter, replaced by the server's ``Retry-After`` when it sent one."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._backoff = wait_random_exponential(multiplier=policy.initial_wait_s, max=policy.max_wait_s)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        failure = outcome.exception() if outcome is not None else None
        if isinstance(failure, TransientError) and failure.retry_after is not None:
            return min(failure.retry_after, self._policy.max_retry_after_s)
        # wait_random_exponential counts from the first attempt: 2**0 * multiplier for the first wait.
        return float(self._backoff(retry_state))


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    policy: RetryPolicy,
    describe: str,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Await ``attempt()`` until it returns, retrying :class:`TransientError` up to ``max_retries`` times.

    Any other exception (an :class:`LlmError`, a cancellation, an error of the
    caller's callback) ends the call at once. When the retries run out, the
    last transient failure becomes an :class:`LlmError`.
    """
    attempts = max_retries + 1

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        failure = outcome.exception() if outcome is not None else None
        wait = state.upcoming_sleep
        logger.warning(
            "%s failed (%s); retry %d of %d in %.2fs",
            describe,
            failure,
            state.attempt_number,
            max_retries,
            wait,
        )
        if on_retry is not None:
            on_retry()

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=_Wait(policy),
        retry=retry_if_exception_type(TransientError),
        before_sleep=before_sleep,
        reraise=True,
        sleep=asyncio.sleep,
    )
    try:
        return await retrying(attempt)
    except TransientError as last:
        message = last.message
    tries = f"after {attempts} attempts" if attempts > 1 else "(retries are off: LlmConfig.max_retries=0)"
    raise LlmError(f"{describe} failed {tries}: {message}")


class SdkClientBase(ABC, Generic[SdkT]):
    """The part of an SDK-backed :class:`~sessionhive.llm.LlmClient` that is the same for every provider.

    Subclasses say how to build the SDK client, how to run one attempt, and how
    to read their SDK's exceptions; this class resolves the key, builds the SDK
    client lazily on the running event loop (one per loop, if the client is
    shared by several), retries, and records metrics.
    """

    provider_name: ClassVar[str]
    key_env_var: ClassVar[str]
    base_url_env_var: ClassVar[str]
    default_endpoint: ClassVar[str]
    provider_host: ClassVar[str]
    placeholder_key: ClassVar[str]

    def __init__(
        self,
        config: LlmConfig,
        *,
        metrics: HiveMetrics | None = None,
        retry: RetryPolicy | None = None,
        keys: EndpointKeys | None = None,
    ) -> None:
        if not isinstance(config, LlmConfig):
            raise InvalidConfig(f"{type(self).__name__} needs an LlmConfig, got {type(config).__name__}")
        if config.provider != self.provider_name:
            raise InvalidConfig(
                f"{type(self).__name__} serves provider {self.provider_name!r}, but the config names "
                f"{config.provider!r}; build clients with sessionhive.llm.create_client(config)"
            )
        self._secret = Secret(self._resolve_key(config, keys))
        self._config = config.without_key()
        self._metrics = metrics
        self._policy = retry if retry is not None else RetryPolicy()
        # One SDK client per event loop: its connection pool belongs to the loop
        # that opened it. Weak keys let a finished loop's entry go with the loop.
        self._sdk_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SdkT] = (
            weakref.WeakKeyDictionary()
        )
        self._sdk_endpoint: str | None = None
        # Every client of the account (provider, endpoint, key) waits on this one limiter.
        account_endpoint = config.base_url or os.environ.get(self.base_url_env_var) or self.default_endpoint
        self._limiter = account_limiter(
            self.provider_name, account_endpoint, self._secret.reveal(), config.rate_limit
        )
        self._account_labels = (self.provider_name, self._limiter.endpoint)
        #: Set by a fallback chain: an overload ends the call at once with :class:`Overloaded`.
        self.fall_back_on_overload = False
        if metrics is not None:
            limiter = self._limiter
            metrics.llm_capacity_queue.labels(*self._account_labels).set_function(
                lambda: limiter.queue_length
            )
            for kind in ("requests", "tokens"):
                metrics.llm_observed_limit.labels(*self._account_labels, kind).set_function(
                    lambda kind=kind: limiter.limit(kind)  # type: ignore[misc]
                )

    # -- what a subclass provides ------------------------------------------------

    @abstractmethod
    def _sdk_classes(self) -> tuple[Callable[..., SdkT], Callable[..., Any]]:
        """The SDK's async client class and its httpx client class (``DefaultAsyncHttpxClient``)."""

    @abstractmethod
    async def _attempt(self, sdk: SdkT, request: LlmRequest, progress: CallProgress) -> LlmResponse:
        """One try of the call; streams when ``progress.on_text`` is set."""

    @abstractmethod
    def _classify(self, exc: Exception) -> TransientError | LlmError | None:
        """What an exception of the SDK means; ``None`` for exceptions that are not the SDK's."""

    def _placeholder_key(self, config: LlmConfig) -> str | None:
        """A key for a self-hosted compatible server, which needs none (the SDK insists on one).

        ``None`` for the provider's own host: there a missing key is an error,
        and the placeholder is never sent to it.
        """
        if config.base_url and urlsplit(config.base_url).hostname != self.provider_host:
            return self.placeholder_key
        return None

    def _build_sdk(self, api_key: str) -> SdkT:
        """A new SDK client with the SDK's own retries off."""
        client_class, http_client_class = self._sdk_classes()
        return client_class(
            api_key=api_key,
            base_url=self._config.base_url,
            timeout=self._config.timeout_s,
            max_retries=0,
            # A redirect would carry the call, and its key header (which httpx keeps across
            # origins it trusts), to a URL nobody allowed: a model API never needs one, so it is an error.
            # The limiter of the key's account learns from every answer's rate-limit headers.
            http_client=http_client_class(
                follow_redirects=False, event_hooks={"response": [self._observe_response]}
            ),
        )

    # -- public surface ------------------------------------------------------------

    @property
    def provider(self) -> str:
        return self.provider_name

    @property
    def model(self) -> str:
        return self._config.model

    @property
    def config(self) -> LlmConfig:
        """The client's configuration, without the API key."""
        return self._config

    @property
    def records_metrics(self) -> bool:
        """Whether this client records its own LLM metrics (the agent loop then leaves them alone)."""
        return self._metrics is not None

    @property
    def endpoint(self) -> str:
        """The base URL requests go to."""
        return self._sdk_endpoint or self._config.base_url or self.default_endpoint

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self._config.model!r}, base_url={self.endpoint!r})"

    async def complete(self, request: LlmRequest) -> LlmResponse:
        """Ask the model and return its whole answer."""
        return await self._call(request, None)

    async def stream(self, request: LlmRequest, on_text: TextCallback) -> LlmResponse:
        """Ask the model, calling ``on_text`` with each text delta, and return the whole answer.

        Cancelling the coroutine closes the HTTP stream before the
        cancellation propagates.
        """
        return await self._call(request, on_text)

    async def aclose(self) -> None:
        """Close the connections this client opened on the running event loop.

        Call it on each loop that used the client, before the loop closes. The
        client stays usable: it reconnects on demand.
        """
        sdk = self._sdk_clients.pop(asyncio.get_running_loop(), None)
        if sdk is not None:
            close = getattr(sdk, "close", None)
            if close is not None:
                await close()

    # -- internals -----------------------------------------------------------------

    def _resolve_key(self, config: LlmConfig, keys: EndpointKeys | None) -> str:
        provider = ProviderEndpoint(
            self.provider_name, self.key_env_var, self.base_url_env_var, self.default_endpoint
        )
        return resolve_key(config, provider, self._placeholder_key(config), keys)

    def _sdk(self) -> SdkT:
        loop = asyncio.get_running_loop()
        sdk = self._sdk_clients.get(loop)
        if sdk is None:
            sdk = self._sdk_clients[loop] = self._build_sdk(self._secret.reveal())
            # The SDK may have taken its base URL from the environment (OPENAI_BASE_URL...).
            self._sdk_endpoint = str(getattr(sdk, "base_url", "")) or None
        return sdk

    async def _observe_response(self, response: object) -> None:
        """httpx response hook: the account's limiter learns from every answer's headers."""
        status = int(getattr(response, "status_code", 0))
        headers = getattr(response, "headers", None)
        if headers is None:
            return
        self._limiter.observe(headers, status, max_pause_s=self._policy.max_retry_after_s)
        if status == 429 and self._metrics is not None:
            self._metrics.llm_rate_limited.labels(*self._account_labels).inc()

    def _describe(self) -> str:
        return f"{self.provider_name} call to model {self._config.model!r}"

    def _transport_failure(
        self, exc: Exception, *, timeout_error: type[Exception], connection_error: type[Exception]
    ) -> TransientError | None:
        """A retryable failure for ``exc`` when the call never got an answer; ``None`` otherwise.

        ``timeout_error`` and ``connection_error`` are the SDK's own classes
        (checked in that order: an SDK's timeout is a kind of connection error).
        """
        if isinstance(exc, timeout_error):
            return TransientError(
                f"no answer from {self.endpoint} within {self._config.timeout_s:g}s", timed_out=True
            )
        if isinstance(exc, connection_error):
            reason = getattr(exc, "message", str(exc))
            return TransientError(
                f"could not reach {self.endpoint} ({reason}; is the server up, and LlmConfig.base_url right?)"
            )
        if isinstance(exc, transport_errors()):
            # A connection that broke mid-stream, which the SDK does not always wrap.
            return TransientError(f"the connection to {self.endpoint} broke: {exc}")
        return None

    def _status_error(
        self, status: int, headers: Mapping[str, str] | None, body: object
    ) -> TransientError | LlmError:
        """An HTTP error answer: a :class:`TransientError` to retry, or an :class:`LlmError` to raise.

        Every client builds its status errors here: one wording for every provider.
        """
        provider, model, endpoint = self.provider_name, self._config.model, self.endpoint
        key_env_var, secret = self.key_env_var, self._secret
        if 300 <= status < 400:
            location = shown_url(headers.get("location", "")) if headers is not None else ""
            return LlmError(
                f"{provider} at {endpoint} answered with a redirect ({status}) to {location or 'elsewhere'}, "
                "which is not followed (it would send the call to an endpoint nobody allowed): set "
                "LlmConfig.base_url to the endpoint that answers"
            )
        detail = server_message(body)
        said = f" (the server said: {redact(detail, secret)})" if detail else ""
        should_retry = (headers.get("x-should-retry") if headers is not None else None) or ""
        if should_retry.lower() == "false":
            return LlmError(
                f"{provider} at {endpoint} refused the request for model {model!r} with HTTP {status} "
                f"and asked not to retry it{said}"
            )
        retryable = status in (408, 409, 429) or status >= 500 or should_retry.lower() == "true"
        if retryable:
            kind = {408: "request timeout", 409: "conflict", 429: "rate limited", 529: "overloaded"}.get(
                status, "server error" if status >= 500 else "retry later"
            )
            return TransientError(
                f"{provider} at {endpoint} answered {kind} ({status}){said}",
                retry_after=retry_after_seconds(headers),
                status=status,
            )
        if status == 401:
            return LlmError(
                f"the API key was rejected (401) by {endpoint}: "
                f"check LlmConfig.api_key or {key_env_var}{said}"
            )
        if status == 403:
            return LlmError(
                f"the API key is not allowed to use model {model!r} (403) at {endpoint}: check the key's "
                f"permissions, LlmConfig.api_key or {key_env_var}{said}"
            )
        if status == 404:
            return LlmError(
                f"model {model!r} not found (404) at {endpoint}: check LlmConfig.model, "
                f"and LlmConfig.base_url if you set one{said}"
            )
        if status == 402:
            return LlmError(
                f"{provider} at {endpoint} wants payment (402): check the account's billing{said}"
            )
        if status == 413:
            return LlmError(
                f"the request is too large for {provider} at {endpoint} (413): compact the session or "
                f"shorten its tool outputs{said}"
            )
        if status in (400, 422):
            return LlmError(
                f"{provider} at {endpoint} rejected the request as invalid ({status}){said}: check "
                f"LlmConfig.model, max_tokens and temperature, the tool schemas, and the thinking budget"
            )
        return LlmError(
            f"{provider} at {endpoint} refused the request for model {model!r} (HTTP {status}){said}"
        )

    def _count_retry(self) -> None:
        tracing.llm_event("sessionhive.llm.retry")
        if self._metrics is not None:
            self._metrics.llm_retries.labels(self.provider_name).inc()

    def _failure_for(self, exc: Exception, progress: CallProgress) -> BaseException:
        """The exception one failed attempt ends with."""
        if isinstance(exc, _CallbackError):
            return exc.original
        if isinstance(exc, LlmError):
            return exc
        if isinstance(exc, MalformedResponseError):
            return LlmError(
                f"{self.endpoint} sent a response that is not a valid {self.provider_name} API answer "
                f"({exc}): check LlmConfig.base_url points at a {self.provider_name}-compatible API"
            )
        failure = exc if isinstance(exc, TransientError) else self._classify(exc)
        if failure is None:
            return exc
        if isinstance(failure, TransientError) and progress.text_delivered:
            # Retrying would hand on_text the same text again: end the call instead.
            return LlmError(
                f"{self._describe()} broke off after text was streamed and is not retried, so that "
                f"no text is delivered twice: {failure.message}"
            )
        return failure

    async def _call(self, request: LlmRequest, on_text: TextCallback | None) -> LlmResponse:
        async def attempt() -> LlmResponse:
            sdk = self._sdk()
            progress = CallProgress(on_text)
            permit = await self._limiter.acquire(estimate_tokens(request, self._config.max_tokens))
            if self._metrics is not None:
                self._metrics.llm_capacity_wait.labels(*self._account_labels).observe(permit.waited_s)
            if permit.waited_s > 0:
                tracing.llm_event("sessionhive.llm.capacity_wait", {"sessionhive.wait_s": permit.waited_s})
            with permit:
                try:
                    return await self._attempt(sdk, request, progress)
                except Exception as exc:  # noqa: BLE001 - classified; foreign exceptions come back as they are
                    failure = self._failure_for(exc, progress)
            if (
                self.fall_back_on_overload
                and isinstance(failure, TransientError)
                and failure.is_overload(self._config.fallback_after_s)
            ):
                failure = Overloaded(f"{self._describe()} is overloaded: {failure.message}")
            if isinstance(failure, TransientError | LlmError):
                # Raised outside the handler, so that the SDK's exception is not
                # even the hidden __context__: its message quotes the server,
                # and a 401 body can echo the key. Our message names the cause.
                failure.__cause__ = None
                failure.__suppress_context__ = True
            raise failure

        started = time.perf_counter()
        outcome = "error"
        try:
            response = await call_with_retries(
                attempt,
                max_retries=self._config.max_retries,
                policy=self._policy,
                describe=self._describe(),
                on_retry=self._count_retry,
            )
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if self._metrics is not None:
                self._metrics.llm_request_duration.labels(
                    self.provider_name, self._config.model, outcome
                ).observe(time.perf_counter() - started, tracing.exemplar())
        if self._metrics is not None:
            tokens = self._metrics.llm_tokens
            if response.usage.prompt_tokens:
                tokens.labels(self.provider_name, self._config.model, "prompt").inc(
                    response.usage.prompt_tokens
                )
            if response.usage.completion_tokens:
                tokens.labels(self.provider_name, self._config.model, "completion").inc(
                    response.usage.completion_tokens
                )
        return response
