"""Webhooks for finished runs (issue 21 item 4): outbox, signed deliveries, retries until a 2xx, restarts.

Everything is real: an HTTP receiver on 127.0.0.1 that answers 500 for its
first seconds (:data:`FAIL_SECONDS`), SQLite files, PostgreSQL when it
answers, child processes killed with ``kill -9``. Runs are real too:
``start_run(..., webhook=...)`` on a scripted model, handed to the outbox by
the session as it finishes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionhive import Hive
from sessionhive.actors.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_RETRY_FIRST,
    WEBHOOK_RETRY_JITTER,
    WEBHOOK_RETRY_MAX,
    retry_delay,
    verify_webhook_signature,
    webhook_signature,
)
from sessionhive.model.runs import Webhook
from sessionhive.persistence.outbox import Delivery, open_outbox
from tests.persistence.conftest_persistence import StoreFactory
from tests.webhooks.receiver import Received, Receiver
from tests.webhooks.webhook_child import OWN_SECRET, SERVER_SECRET, finished_run, scripted_model

pytest_plugins = ("tests.persistence.conftest_persistence",)

#: How long the receiver answers 500 before it answers 200 (the issue's 10 s, shortened).
FAIL_SECONDS = float(os.environ.get("SESSIONHIVE_TEST_WEBHOOK_FAIL_S", "3"))
#: Longest wait for a delivery: the failing window plus the retries' backoff after it.
DELIVERY_WAIT = 60.0
_REPO = Path(__file__).resolve().parents[2]
_CHILD = Path(__file__).with_name("webhook_child.py")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver(fail_for=FAIL_SECONDS)
    yield started
    started.close()


def independent_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def outbox_rows(database: Path) -> list[dict[str, object]]:
    with sqlite3.connect(database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM sessionhive_webhook_outbox")]


def sample(hive: Hive, name: str, **labels: str) -> float:
    value = hive.core.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def assert_one_delivery(requests: list[Received], run_id: str, secret: str) -> str:
    """Every request is the same delivery of ``run_id``, signed with ``secret``; the last one got 200."""
    ids = {request.headers[DELIVERY_HEADER] for request in requests}
    assert len(ids) == 1, f"one delivery id across retries, got {ids}"
    (delivery_id,) = ids
    assert requests[-1].status == 200
    assert [r.status for r in requests[:-1]] == [500] * (len(requests) - 1)
    for request in requests:
        assert request.body == requests[0].body, "every retry sends the same bytes"
        assert request.headers[SIGNATURE_HEADER] == independent_signature(request.body, secret)
        assert request.headers["Content-Type"] == "application/json"
        assert request.path == "/hook/path?token=in-the-url"
    body = json.loads(requests[0].body)
    assert body["delivery_id"] == delivery_id
    assert body["run_id"] == run_id
    assert body["status"] == "completed"
    return delivery_id


# --------------------------------------------------------------------------- signature and schedule


def test_signature_is_the_hex_hmac_sha256_of_the_exact_body() -> None:
    body = b'{"run_id":"run_x","delivery_id":"dlv_1","text":"caf\\u00e9"}'
    assert webhook_signature(body, "k3y") == independent_signature(body, "k3y")
    assert webhook_signature(body, b"k3y") == independent_signature(body, "k3y")
    assert verify_webhook_signature(body, independent_signature(body, "k3y"), "k3y")
    assert not verify_webhook_signature(body + b" ", independent_signature(body, "k3y"), "k3y")
    assert not verify_webhook_signature(body, independent_signature(body, "other"), "k3y")
    assert not verify_webhook_signature(body, None, "k3y")


def test_retry_schedule_doubles_with_jitter_up_to_its_cap() -> None:
    for attempts in range(1, 16):
        base = min(WEBHOOK_RETRY_FIRST * 2 ** (attempts - 1), WEBHOOK_RETRY_MAX)
        delays = [retry_delay(attempts) for _ in range(20)]
        assert all(base <= delay <= base + WEBHOOK_RETRY_JITTER for delay in delays)
        assert len(set(delays)) > 1, "jittered: deliveries failing together do not retry together"


# --------------------------------------------------------------------------- the outbox, on every store


def test_outbox_claims_each_due_delivery_once_and_keeps_what_is_pending(stores: StoreFactory) -> None:
    store = stores.open()
    outbox = open_outbox(store)
    now = time.time()
    first = Delivery("dlv_first", "http://127.0.0.1:9/a", '{"n":1}', created_at=now, next_attempt_at=now - 2)
    second = Delivery(
        "dlv_second", "http://127.0.0.1:9/b", '{"n":2}', created_at=now, next_attempt_at=now - 1
    )
    later = Delivery("dlv_later", "http://127.0.0.1:9/c", '{"n":3}', created_at=now, next_attempt_at=now + 60)
    for delivery in (later, second, first):
        outbox.add(delivery)
    assert outbox.pending() == (3, now - 2)

    claimed = outbox.claim_due(now, 30.0, 10)
    assert [(d.delivery_id, d.attempts, d.next_attempt_at) for d in claimed] == [
        ("dlv_first", 1, now + 30.0),
        ("dlv_second", 1, now + 30.0),
    ]
    assert claimed[0].body == '{"n":1}' and claimed[0].url == "http://127.0.0.1:9/a"
    assert outbox.claim_due(now, 30.0, 10) == [], "a claimed attempt is not claimed again within its lease"

    outbox.retry_at("dlv_first", now - 0.5)
    outbox.mark_delivered("dlv_second", now)
    (again,) = outbox.claim_due(now, 30.0, 10)
    assert (again.delivery_id, again.attempts) == ("dlv_first", 2)
    assert outbox.pending() == (2, now + 30.0)
    if stores.kind != "memory":
        reopened = open_outbox(stores.open())
        assert reopened.pending() == (2, now + 30.0), "what is pending survives the process"
        assert reopened.claim_due(now + 61.0, 30.0, 10)[0].delivery_id in ("dlv_first", "dlv_later")


# --------------------------------------------------------------------------- deliveries from a Hive


def test_delivery_retried_through_500s_arrives_once_signed_with_the_webhooks_secret(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sessionhive")
    database = tmp_path / "hive.db"
    hive = Hive.start(
        store=f"sqlite:///{database}", llm=scripted_model(), workspace=tmp_path, webhook_secret=SERVER_SECRET
    )
    try:
        run = finished_run(hive, "s1", Webhook(receiver.url, secret=OWN_SECRET))
        assert run.status == "completed"
        (row,) = outbox_rows(database)  # committed as the run finished
        assert row["delivered_at"] is None
        assert receiver.delivered.wait(DELIVERY_WAIT)
    finally:
        hive.stop()  # lets the answered attempt record itself

    requests = receiver.requests
    assert len(requests) >= 2, "the receiver failed first: the delivery was retried"
    delivery_id = assert_one_delivery(requests, run.run_id, OWN_SECRET)
    assert json.loads(requests[0].body) == {**run.to_dict(), "delivery_id": delivery_id}
    (row,) = outbox_rows(database)
    assert row["delivery_id"] == delivery_id
    assert row["delivered_at"] is not None
    assert row["attempts"] == len(requests)
    assert sample(hive, "sessionhive_webhook_deliveries_total", outcome="delivered") == 1
    assert sample(hive, "sessionhive_webhook_deliveries_total", outcome="refused") == len(requests) - 1
    assert sample(hive, "sessionhive_webhook_attempts_total") == len(requests)
    assert sample(hive, "sessionhive_webhook_pending") == 0
    logged = caplog.text
    assert "webhook delivery" in logged and "answered 500" in logged, "the retries were logged"
    for secret in (OWN_SECRET, SERVER_SECRET, "token=in-the-url", "/hook/path"):
        assert secret not in logged, f"{secret!r} reached a log line"


@pytest.mark.parametrize("store", ["file", "memory"])
def test_file_and_memory_stores_deliver_too_signed_with_the_servers_key(tmp_path: Path, store: str) -> None:
    spec = f"file:{tmp_path / 'sessions'}" if store == "file" else "memory"
    receiver = Receiver()
    try:
        with Hive.start(
            store=spec, llm=scripted_model(), workspace=tmp_path, webhook_secret=SERVER_SECRET
        ) as hive:
            finished_run(hive, "s2", Webhook(receiver.url))  # no secret of its own
            assert receiver.delivered.wait(DELIVERY_WAIT)
        (request,) = receiver.requests
        assert request.headers[SIGNATURE_HEADER] == independent_signature(request.body, SERVER_SECRET)
        if store == "file":
            assert not list((tmp_path / "sessions" / ".webhook-outbox").glob("*.json")), "delivered: removed"
    finally:
        receiver.close()


def test_a_redirect_is_not_followed(tmp_path: Path) -> None:
    elsewhere = Receiver()
    redirecting = Receiver(fail_for=FAIL_SECONDS, fail_status=307, location=elsewhere.url)
    try:
        with Hive.start(store="memory", llm=scripted_model(), workspace=tmp_path) as hive:
            finished_run(hive, "s3", Webhook(redirecting.url))
            assert redirecting.delivered.wait(DELIVERY_WAIT)
        first = redirecting.requests[0]
        assert first.status == 307
        assert SIGNATURE_HEADER not in first.headers, "no key anywhere: sent unsigned"
        assert elsewhere.requests == []
    finally:
        redirecting.close()
        elsewhere.close()


def test_no_webhook_secret_reaches_the_sqlite_file(tmp_path: Path) -> None:
    database = tmp_path / "hive.db"
    down = Receiver(listening=False)  # connections refused: the delivery stays pending
    try:
        with Hive.start(
            store=f"sqlite:///{database}",
            llm=scripted_model(),
            workspace=tmp_path,
            webhook_secret=SERVER_SECRET,
        ) as hive:
            finished_run(hive, "s4", Webhook(down.url, secret=OWN_SECRET))
    finally:
        down.close()
    files = [Path(p) for p in (str(database), f"{database}-wal", f"{database}-shm") if Path(p).exists()]
    data = b"".join(path.read_bytes() for path in files)
    assert down.url.encode() in data, (
        "the pending delivery is in the file (the test looks at the right bytes)"
    )
    assert OWN_SECRET.encode() not in data
    assert SERVER_SECRET.encode() not in data


# --------------------------------------------------------------------------- across kill -9


def _child(mode: str, database: Path, url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    return subprocess.Popen(
        [sys.executable, str(_CHILD), mode, str(database), url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=database.parent,
    )


def test_a_delivery_left_by_a_killed_process_is_delivered_by_the_next(tmp_path: Path) -> None:
    database = tmp_path / "hive.db"
    receiver = Receiver(fail_for=FAIL_SECONDS, listening=False)  # down while the first process lives
    first = _child("enqueue", database, receiver.url)
    second: subprocess.Popen[str] | None = None
    try:
        assert first.stdout is not None
        line = first.stdout.readline().split()
        assert line[:1] == ["enqueued"], line
        run_id = line[1]
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        (row,) = outbox_rows(database)
        assert row["delivered_at"] is None
        left_id = row["delivery_id"]

        receiver.listen()  # up again, failing for FAIL_SECONDS, then 200
        second = _child("serve", database, receiver.url)
        assert second.stdout is not None
        assert second.stdout.readline().strip() == "started"
        assert receiver.delivered.wait(DELIVERY_WAIT)
        assert second.stdin is not None
        second.stdin.close()  # the child stops its Hive
        assert second.wait(60) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)
        receiver.close()

    # The Webhook's own secret died with the first process: the server's key signs.
    delivery_id = assert_one_delivery(receiver.requests, run_id, SERVER_SECRET)
    assert delivery_id == left_id
    (row,) = outbox_rows(database)
    assert row["delivered_at"] is not None
