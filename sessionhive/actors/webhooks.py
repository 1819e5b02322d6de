"""Webhooks for finished runs: written to the outbox when the run ends, POSTed until a 2xx answers.

:class:`WebhookDeliverer` is a Hive's :class:`~sessionhive.actors.services.RunWebhooks`.
``run_finished`` writes the delivery to the outbox (committed before it
returns) and wakes the deliverer: a thread of its own running an asyncio loop,
which POSTs each due delivery with httpx and records the outcome:

- a 2xx marks the delivery delivered; anything else (another status, a
  redirect, a timeout, a refused connection) schedules the next attempt after
  :func:`retry_delay` (exponential backoff plus jitter, by tenacity), for as
  long as it takes, across restarts (a new Hive on the same store picks the
  pending deliveries up when it starts): at least once, deduplicable by the
  ``Sessionhive-Delivery`` id, the same on every attempt.
- The body is the finished run (:meth:`Run.to_dict`) plus its
  ``delivery_id``, signed as sent: ``Sessionhive-Signature: sha256=<hex
  HMAC-SHA256 of the body>`` keyed by the :class:`~sessionhive.Webhook`'s own
  secret while this process lives (it is kept in memory only), else by the
  Hive's ``webhook_secret``; with neither, no signature header is sent.
- Requests have short timeouts, never follow a redirect, carry no ambient
  credentials (``trust_env=False``: no ``.netrc``, no proxy variables) and
  nothing but the headers above; logs name a URL's origin, never its path,
  and never a secret.

The thread starts only when there is something to deliver (a pending row at
start, or the first finished run with a webhook): a Hive that never uses
webhooks pays nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
    wait_random_exponential,
)

from sessionhive.model.errors import StoreError
from sessionhive.persistence.outbox import Delivery, WebhookOutbox, open_outbox
from sessionhive.persistence.stores import is_transient

if TYPE_CHECKING:
    import httpx

    from sessionhive.metrics.registry import HiveMetrics
    from sessionhive.model.runs import Run, Webhook
    from sessionhive.persistence import SessionStore

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "WEBHOOK_CONNECT_TIMEOUT",
    "WEBHOOK_RETRY_FIRST",
    "WEBHOOK_RETRY_JITTER",
    "WEBHOOK_RETRY_MAX",
    "WEBHOOK_TIMEOUT",
    "WebhookDeliverer",
    "retry_delay",
    "verify_webhook_signature",
    "webhook_signature",
]

log = logging.getLogger("sessionhive.webhooks")

DELIVERY_HEADER = "Sessionhive-Delivery"
SIGNATURE_HEADER = "Sessionhive-Signature"

#: Seconds to connect to a receiver, and for its whole answer: a receiver acknowledges
#: and works later; a slow one is retried rather than holding a delivery slot.
WEBHOOK_CONNECT_TIMEOUT = 2.0
WEBHOOK_TIMEOUT = 5.0
#: The retry schedule: 1, 2, 4, 8 ... seconds after each failed attempt, at most
#: WEBHOOK_RETRY_MAX apart, each plus up to WEBHOOK_RETRY_JITTER seconds at random (so that
#: deliveries failing together do not come back together).
WEBHOOK_RETRY_FIRST = 1.0
WEBHOOK_RETRY_MAX = 300.0
WEBHOOK_RETRY_JITTER = 1.0
#: How long a claimed attempt holds its delivery: a process killed mid-attempt leaves it
#: to be tried again after this (by itself restarted, or by another Hive on the database).
_CLAIM_LEASE = WEBHOOK_TIMEOUT + 10.0
#: POSTs in flight at once: a few dead receivers do not hold up the live ones.
_MAX_IN_FLIGHT = 8
#: Longest sleep between two looks at the outbox (another Hive may have left work in it).
_IDLE_POLL = 30.0
#: Pause after the outbox failed to answer (a locked or lost database).
_STORE_RETRY = 5.0
#: Acknowledged deliveries stay in a SQL outbox this long (for an operator to look at).
_DELIVERED_RETENTION = 24 * 3600.0
_PRUNE_EVERY = 3600.0

_BACKOFF = wait_exponential(multiplier=WEBHOOK_RETRY_FIRST, max=WEBHOOK_RETRY_MAX) + wait_random(
    0, WEBHOOK_RETRY_JITTER
)
# Writing a delivery meets a busy database now and then: a few quick tries, then the error.
_ADD_RETRYING = Retrying(
    stop=stop_after_attempt(4),
    wait=wait_random_exponential(multiplier=0.05, max=0.5),
    retry=retry_if_exception(is_transient),
    reraise=True,
)


def webhook_signature(body: bytes, secret: str | bytes) -> str:
    """The ``Sessionhive-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256 keyed by ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_webhook_signature(body: bytes, signature: str | None, secret: str | bytes) -> bool:
    """Whether ``signature`` (the header's value) signs ``body`` (the raw request bytes) with ``secret``."""
    if not signature:
        return False
    return hmac.compare_digest(signature.encode(), webhook_signature(body, secret).encode())


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (see :data:`WEBHOOK_RETRY_FIRST`)."""
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = max(1, attempts)
    return float(_BACKOFF(state))


def _origin(url: str) -> str:
    """What a log line may say of a URL: its scheme, host and port (a path or query may hold a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed URL>"
    return f"{parts.scheme}://{host}{port}"


def _sendable(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


class WebhookDeliverer:
    """A Hive's webhooks: the outbox beside its store, and the thread that empties it (see the module)."""

    def __init__(
        self, outbox: WebhookOutbox, *, server_secret: str | bytes | None, metrics: HiveMetrics
    ) -> None:
        self._outbox = outbox
        self._server_key = server_secret.encode() if isinstance(server_secret, str) else server_secret
        self._metrics = metrics
        # Delivery id -> its Webhook's own secret: memory only, never written anywhere. Set by
        # the actors' threads, read by the deliverer's (single dict operations, atomic).
        self._secrets: dict[str, bytes] = {}
        # Guards starting and stopping the delivery thread (run_finished comes from any actor
        # thread): no session state.
        self._lifecycle = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake = asyncio.Event()  # bound to the delivery loop on its first wait
        self._stopping = False
        self._closed = False

    @classmethod
    def open(
        cls, store: SessionStore, *, server_secret: str | bytes | None, metrics: HiveMetrics
    ) -> WebhookDeliverer:
        """The deliverer of ``store``'s outbox (blocking: it counts the deliveries left by a last run)."""
        deliverer = cls(open_outbox(store), server_secret=server_secret, metrics=metrics)
        try:
            waiting, _ = deliverer._outbox.pending()
        except StoreError as exc:
            log.warning("sessionhive: cannot read the webhook outbox of %s: %s", deliverer._outbox.name, exc)
            waiting = 1  # look again from the delivery thread
        metrics.webhook_pending.set(waiting)
        if waiting:
            deliverer._ensure_running()
        return deliverer

    # ------------------------------------------------------------------ RunWebhooks

    def run_finished(self, run: Run, webhook: Webhook) -> None:
        """Write the delivery of ``run`` into the outbox (committed on return), then send it."""
        if not _sendable(webhook.url):
            log.error(
                "sessionhive: run %s: webhook URL %s is not http(s) with a host; not delivered",
                run.run_id,
                _origin(webhook.url),
            )
            return
        delivery_id = "dlv_" + secrets.token_hex(16)
        body = json.dumps({**run.to_dict(), "delivery_id": delivery_id}, separators=(",", ":"))
        now = time.time()
        delivery = Delivery(delivery_id, webhook.url, body, created_at=now, next_attempt_at=now)
        if webhook.secret:
            self._secrets[delivery_id] = webhook.secret.encode()  # before the row: never sent unsigned by it
        try:
            _ADD_RETRYING(self._outbox.add, delivery)
        except StoreError as exc:
            self._secrets.pop(delivery_id, None)
            log.error("sessionhive: run %s: its webhook delivery could not be stored: %s", run.run_id, exc)
            return
        self._metrics.webhook_pending.inc()
        self._ensure_running()
        self._nudge()

    # ------------------------------------------------------------------ lifecycle

    def _ensure_running(self) -> None:
        with self._lifecycle:
            if self._thread is not None or self._closed:
                return
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._thread = threading.Thread(
                target=loop.run_until_complete,
                args=(self._serve(),),
                name="sessionhive-webhooks",
                daemon=True,
            )
            self._thread.start()

    def _nudge(self) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the Hive stopped
                loop.call_soon_threadsafe(self._wake.set)

    def stop(self, timeout: float | None = None) -> None:
        """Stop delivering; attempts in flight finish (past a timeout, they go back to the outbox).

        A run that finishes afterwards is still written to the outbox: the
        next Hive on this store delivers it.
        """
        with self._lifecycle:
            self._closed = True
            self._stopping = True
            thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._nudge()
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()

    # ------------------------------------------------------------------ the delivery loop

    async def _serve(self) -> None:
        import httpx

        in_flight: dict[str, asyncio.Task[None]] = {}
        pruned_at = 0.0
        timeout = httpx.Timeout(WEBHOOK_TIMEOUT, connect=WEBHOOK_CONNECT_TIMEOUT)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            try:
                while not self._stopping:
                    self._wake.clear()
                    pause = _IDLE_POLL
                    try:
                        free = _MAX_IN_FLIGHT - len(in_flight)
                        if free > 0:
                            claimed = await asyncio.to_thread(
                                self._outbox.claim_due, time.time(), _CLAIM_LEASE, free
                            )
                            for delivery in claimed:
                                task = asyncio.create_task(self._attempt(client, delivery))
                                in_flight[delivery.delivery_id] = task
                                task.add_done_callback(functools.partial(self._attempt_done, in_flight))
                        waiting, earliest = await asyncio.to_thread(self._outbox.pending)
                        self._metrics.webhook_pending.set(waiting)
                        if earliest is not None and len(in_flight) < _MAX_IN_FLIGHT:
                            pause = min(pause, max(0.0, earliest - time.time()))
                        if time.time() - pruned_at > _PRUNE_EVERY:
                            pruned_at = time.time()
                            await asyncio.to_thread(self._outbox.prune, pruned_at - _DELIVERED_RETENTION)
                    except StoreError as exc:
                        log.warning("sessionhive: webhook outbox %s: %s", self._outbox.name, exc)
                        pause = _STORE_RETRY
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), pause)
            finally:
                # Stopping: attempts in flight get their answer (bounded by the request timeout),
                # so that what was delivered is recorded as delivered; any still going are cancelled.
                if in_flight:
                    await asyncio.wait(list(in_flight.values()), timeout=WEBHOOK_TIMEOUT + 1.0)
                for task in in_flight.values():
                    task.cancel()
                await asyncio.gather(*in_flight.values(), return_exceptions=True)

    def _attempt_done(self, in_flight: dict[str, asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        for delivery_id, held in list(in_flight.items()):
            if held is task:
                del in_flight[delivery_id]
        self._wake.set()  # a slot is free

    async def _attempt(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        """POST ``delivery`` once; record delivered, or when to try again."""
        import httpx

        body = delivery.body.encode()
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery.delivery_id}
        key = self._secrets.get(delivery.delivery_id, self._server_key)
        if key:
            headers[SIGNATURE_HEADER] = webhook_signature(body, key)
        self._metrics.webhook_attempts.inc()
        why: str
        status = 0
        try:
            # Streamed and left unread: a receiver's answer is its status, whatever it sends after.
            async with client.stream("POST", delivery.url, content=body, headers=headers) as response:
                status = response.status_code
            why = f"answered {status}"
        except asyncio.CancelledError:
            # Stopping: this attempt never finished; let the next Hive try at once, not after the lease.
            with contextlib.suppress(StoreError):
                self._outbox.retry_at(delivery.delivery_id, time.time())
            raise
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            why = f"no answer ({type(exc).__name__})"
        if 200 <= status < 300:
            self._metrics.child(self._metrics.webhook_deliveries, "delivered").inc()
            try:
                await asyncio.to_thread(self._outbox.mark_delivered, delivery.delivery_id, time.time())
            except StoreError as exc:
                # Sent, but not recorded: it is sent again after the lease (at least once).
                log.warning(
                    "sessionhive: webhook delivery %s sent but not recorded: %s", delivery.delivery_id, exc
                )
                return
            self._secrets.pop(delivery.delivery_id, None)
            with contextlib.suppress(StoreError):  # the next pass of the loop counts again
                self._metrics.webhook_pending.set((await asyncio.to_thread(self._outbox.pending))[0])
            log.debug(
                "sessionhive: webhook delivery %s to %s: %s", delivery.delivery_id, _origin(delivery.url), why
            )
            return
        self._metrics.child(self._metrics.webhook_deliveries, "refused" if status else "unreachable").inc()
        delay = retry_delay(delivery.attempts)
        log.info(
            "sessionhive: webhook delivery %s to %s: %s (attempt %d); next attempt in %.1f s",
            delivery.delivery_id,
            _origin(delivery.url),
            why,
            delivery.attempts,
            delay,
        )
        try:
            await asyncio.to_thread(self._outbox.retry_at, delivery.delivery_id, time.time() + delay)
        except StoreError as exc:
            log.warning(
                "sessionhive: webhook delivery %s: %s (retried after the lease)", delivery.delivery_id, exc
            )
