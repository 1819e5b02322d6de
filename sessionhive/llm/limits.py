"""One limiter per provider account: calls wait for capacity before they are sent, in arrival order.

A provider enforces its limits per account (organisation and key), not per
session: every session that retries its own 429s on its own schedule keeps
the account saturated, and the retries themselves use up the quota. So every
SDK client of one account (same provider, base URL and key, whatever the
model) shares one :class:`AccountLimiter`, process-wide, which:

* holds a request bucket and a token bucket that refill continuously (the
  way providers count), sized from ``LlmConfig.rate_limit`` and from what the
  provider says in its headers (``x-ratelimit-limit-*``,
  ``x-ratelimit-remaining-*``, Anthropic's ``anthropic-ratelimit-*``): a limit
  the provider states replaces the configured one, and the remaining
  capacity it reports lowers the bucket when other callers used the key too;
* stops every call after a 429 until its ``Retry-After`` has passed;
* caps the calls in flight at ``max_concurrent``;
* admits waiting calls first in, first out: no session starves, and a
  session's calls keep their order. A waiting call is an ordinary ``await``:
  cancelling it (cancel, pause, drain) takes it out of the queue at once.

The key is never stored here, only a SHA-256 digest of it in the registry's
key, so two keys on one endpoint get two limiters; metrics name the account
by provider and endpoint only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

from sessionhive.llm.base import LlmRequest
from sessionhive.model.llm_config import RateLimit
from sessionhive.model.urls import shown_url

__all__ = ["AccountLimiter", "Permit", "account_limiter", "estimate_tokens"]

# What a 429 without Retry-After (or reset headers) costs every caller of the account.
_DEFAULT_429_PAUSE_S = 1.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def estimate_tokens(request: LlmRequest, max_tokens: int) -> int:
    """What a call charges against a tokens-per-minute quota: a prompt estimate plus its output budget.

    Providers admit a call on such an estimate (they cannot know the output
    yet), so the limiter does the same. Three characters a token errs on the
    high side for English and JSON; the provider's ``remaining`` header
    corrects the bucket either way.
    """
    chars = len(request.system or "")
    for message in request.messages:
        chars += len(message.text) + 16
        for call in message.tool_calls:
            arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
            chars += len(call.name) + len(arguments) + 32
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters))
    return chars // 3 + 16 + max_tokens


def parse_reset_seconds(raw: str, *, now: datetime | None = None) -> float | None:
    """A reset header in seconds: OpenAI's durations (``20ms``, ``1s``, ``6m0s``), plain seconds, or
    Anthropic's RFC 3339 time."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    parts = _DURATION_PART.findall(text)
    if parts and "".join(number + unit for number, unit in parts) == text:
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(number) * scale[unit] for number, unit in parts)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


class _Bucket:
    """A continuously refilling bucket of ``capacity`` units, ``capacity`` a minute."""

    def __init__(self, capacity: float, now: float, level: float | None = None) -> None:
        self.capacity = capacity
        self.level = capacity if level is None else min(level, capacity)
        self.updated = now

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.capacity, self.level + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def wait_for(self, amount: float) -> float:
        # A call larger than the whole bucket waits for a full bucket, not forever.
        missing = min(amount, self.capacity) - self.level
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float) -> None:
        self.level -= min(amount, self.capacity)


@dataclass
class _Waiter:
    tokens: int
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # its loop closed: the waiter is gone with it
            pass


class Permit:
    """Leave to send one call; ``with permit:`` holds the concurrency slot until the call ends."""

    def __init__(self, limiter: AccountLimiter, waited_s: float) -> None:
        self._limiter = limiter
        self.waited_s = waited_s
        """Seconds the call waited for capacity."""
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter.release_slot()

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class AccountLimiter:
    """The shared limits of one provider account; see the module docstring.

    Thread-safe: sessions on several event loops may share it (each waiter is
    woken on its own loop).
    """

    def __init__(self, provider: str, endpoint: str, stated: RateLimit | None = None) -> None:
        self.provider = provider
        self.endpoint = shown_url(endpoint)
        # Not session state: one provider account's buckets, shared by every session whose
        # client uses that key, and those clients run on several event loops and threads (the
        # Hive's loop, sync callers, cluster shards); an actor would add a mailbox hop to every
        # model call, so this short critical section guards only the buckets and the queue.
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._in_flight = 0
        self._max_concurrent: int | None = None
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        self._learned: dict[str, float] = {}
        self._blocked_until = 0.0
        self.rate_limited = 0
        """429 answers the account received."""
        self.state(stated)

    # -- configuration ---------------------------------------------------------------

    def state(self, limit: RateLimit | None) -> None:
        """Apply limits stated in code; a limit the provider announced in its headers wins over them."""
        if limit is None:
            return
        now = time.monotonic()
        with self._lock:
            if limit.max_concurrent is not None:
                self._max_concurrent = limit.max_concurrent
            if limit.requests_per_minute is not None and "requests" not in self._learned:
                self._requests = self._resized(self._requests, limit.requests_per_minute, now)
            if limit.tokens_per_minute is not None and "tokens" not in self._learned:
                self._tokens = self._resized(self._tokens, limit.tokens_per_minute, now)
        self._wake_head()

    @staticmethod
    def _resized(bucket: _Bucket | None, capacity: float, now: float) -> _Bucket:
        if bucket is None:
            return _Bucket(capacity, now)
        bucket.refill(now)
        bucket.capacity = capacity
        bucket.level = min(bucket.level, capacity)
        return bucket

    # -- what the provider says --------------------------------------------------------

    def observe(self, headers: Mapping[str, str], status: int, *, max_pause_s: float = 30.0) -> None:
        """Learn from an answer's headers: limits, remaining capacity, and a 429's wait.

        A 429's wait holds the account at most ``max_pause_s`` (the caller's cap on
        ``Retry-After``): a limiter that waited longer than its retries would stall them.
        """
        now = time.monotonic()
        learned = False
        with self._lock:
            for kind in ("requests", "tokens"):
                limit = _number(
                    headers.get(f"x-ratelimit-limit-{kind}")
                    or headers.get(f"anthropic-ratelimit-{kind}-limit")
                )
                remaining = _number(
                    headers.get(f"x-ratelimit-remaining-{kind}")
                    or headers.get(f"anthropic-ratelimit-{kind}-remaining")
                )
                if limit is None or limit <= 0:
                    continue
                learned = True
                self._learned[kind] = limit
                bucket = self._requests if kind == "requests" else self._tokens
                if bucket is None:
                    bucket = _Bucket(limit, now, remaining)
                else:
                    bucket = self._resized(bucket, limit, now)
                    if remaining is not None:
                        # Never raise the level from a header: an answer that left before
                        # calls admitted since reports capacity those calls already took.
                        bucket.level = min(bucket.level, remaining)
                if kind == "requests":
                    self._requests = bucket
                else:
                    self._tokens = bucket
            if status == 429:
                self.rate_limited += 1
                wait = _retry_after(headers)
                if wait is None:
                    wait = _DEFAULT_429_PAUSE_S
                self._blocked_until = max(self._blocked_until, now + min(wait, max_pause_s))
        if learned or status == 429:
            self._wake_head()

    # -- waiting for capacity ------------------------------------------------------------

    async def acquire(self, tokens: int) -> Permit:
        """Wait, in arrival order, until a call of ``tokens`` tokens fits; cancelling leaves the queue."""
        started = time.monotonic()
        waiter = _Waiter(tokens, asyncio.get_running_loop())
        with self._lock:
            self._queue.append(waiter)
        try:
            while True:
                with self._lock:
                    delay = self._admit(waiter, time.monotonic())
                if delay is None:
                    break
                if math.isinf(delay):
                    await waiter.event.wait()
                else:
                    try:
                        async with asyncio.timeout(delay):
                            await waiter.event.wait()
                    except TimeoutError:
                        pass
                waiter.event.clear()
        except BaseException:
            with self._lock:
                was_head = bool(self._queue) and self._queue[0] is waiter
                if waiter in self._queue:
                    self._queue.remove(waiter)
            if was_head:
                self._wake_head()
            raise
        self._wake_head()
        return Permit(self, time.monotonic() - started)

    def _admit(self, waiter: _Waiter, now: float) -> float | None:
        """Admit ``waiter`` (``None``), or how long it sleeps before looking again (``inf``: until woken)."""
        if self._queue[0] is not waiter:
            return math.inf
        if self._blocked_until > now:
            return self._blocked_until - now
        if self._max_concurrent is not None and self._in_flight >= self._max_concurrent:
            return math.inf
        wait = 0.0
        if self._requests is not None:
            self._requests.refill(now)
            wait = max(wait, self._requests.wait_for(1))
        if self._tokens is not None:
            self._tokens.refill(now)
            wait = max(wait, self._tokens.wait_for(waiter.tokens))
        if wait > 0:
            return wait
        if self._requests is not None:
            self._requests.take(1)
        if self._tokens is not None:
            self._tokens.take(waiter.tokens)
        self._in_flight += 1
        self._queue.popleft()
        return None

    def release_slot(self) -> None:
        """A call admitted earlier ended (:meth:`Permit.release` calls this)."""
        with self._lock:
            self._in_flight -= 1
        self._wake_head()

    def _wake_head(self) -> None:
        with self._lock:
            head = self._queue[0] if self._queue else None
        if head is not None:
            head.wake()

    # -- what metrics read ---------------------------------------------------------------

    @property
    def queue_length(self) -> int:
        """Calls waiting for capacity now."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def limit(self, kind: str) -> float:
        """The per-minute limit in force for ``"requests"`` or ``"tokens"`` (0: none known)."""
        bucket = self._requests if kind == "requests" else self._tokens
        return bucket.capacity if bucket is not None else 0.0

    def __repr__(self) -> str:
        return f"AccountLimiter({self.provider!r}, {self.endpoint!r})"


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name in ("retry-after-ms",):
        raw = headers.get(name)
        if raw is not None:
            value = _number(raw)
            if value is not None:
                return value / 1000.0
    raw = headers.get("retry-after")
    if raw is not None:
        value = parse_reset_seconds(raw)
        if value is not None:
            return value
    waits = [
        parse_reset_seconds(headers[name])
        for name in (
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-tokens-reset",
        )
        if name in headers
    ]
    known = [wait for wait in waits if wait is not None]
    return min(known) if known else None


# Not session state: the process-wide table of accounts, looked up when a client is built (from any
# thread), so that two Hives in one process share an account's limits.
_registry_lock = threading.Lock()
_registry: dict[tuple[str, str, str], AccountLimiter] = {}


def account_limiter(provider: str, endpoint: str, api_key: str, stated: RateLimit | None) -> AccountLimiter:
    """The process's limiter for the account (``provider``, ``endpoint``, key), with ``stated`` applied."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    account = (provider, endpoint.rstrip("/"), digest)
    with _registry_lock:
        limiter = _registry.get(account)
        if limiter is None:
            limiter = _registry[account] = AccountLimiter(provider, endpoint.rstrip("/"))
    limiter.state(stated)
    return limiter
