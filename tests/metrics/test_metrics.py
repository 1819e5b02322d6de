"""Prometheus metrics, as an operator sees them: scraped over real HTTP and parsed.

Every test drives a Hive through its public API, fetches ``/metrics`` with
urllib (or through the WSGI / ASGI apps), parses the exposition with
``prometheus_client.parser`` and checks that the numbers match what was done.
Counters are read right after the calls that caused them returned: each
increment happens inside an actor before that actor answers. Only the
mailbox-depth gauge, refreshed by the supervisor's one-second tick, is polled
(with a deadline): that waits for a timer, not for an actor.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sessionhive import (
    ConfirmationPolicy,
    ConfirmationRequired,
    ContextCompacted,
    Hive,
    LlmConfig,
    LlmError,
    Message,
    MetricsConfig,
    PermissionPolicy,
    PermissionRule,
    Reply,
    ScriptedLlm,
    SessionConfig,
    SessionhiveError,
    ToolCall,
    TurnCancelled,
    TurnFailed,
    TurnStream,
)
from sessionhive.actors import session as session_module
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.persistence.stores import MemoryStore
from tests.conftest import tool_loop_script
from tests.llm import llm_servers
from tests.llm.llm_servers import FaultSpec, OpenAiServer, ReplySpec

openai_server = llm_servers.openai_server

Series = tuple[str, frozenset[tuple[str, str]]]

NO_CONFIRM = SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))
SCRAPE_DEADLINE_S = 10.0


# --------------------------------------------------------------------------- scraping


@dataclass(frozen=True)
class Exposition:
    """One scrape: the raw text and every sample, keyed by sample name and label set."""

    text: str
    samples: dict[Series, float]

    def __repr__(self) -> str:
        return f"<Exposition of {len(self.samples)} samples>"

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name{labels}``, or ``None`` when the series is not exposed."""
        return self.samples.get((name, frozenset(labels.items())))

    def get(self, name: str, **labels: str) -> float:
        """The sample ``name{labels}``, failing the test when it is absent."""
        value = self.value(name, **labels)
        assert value is not None, f"{name}{labels} is not exposed; exposed: {sorted(self.names())}"
        return value

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def series(self) -> set[Series]:
        return set(self.samples)

    def label_names(self) -> set[str]:
        return {label for _, labels in self.samples for label, _ in labels}


def parse(text: str) -> Exposition:
    samples: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return Exposition(text, samples)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=SCRAPE_DEADLINE_S) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body: bytes = response.read()
    return body.decode("utf-8")


def scrape(hive: Hive) -> Exposition:
    assert hive.metrics_url is not None, "the Hive was started without MetricsConfig(port=...)"
    return parse(fetch(hive.metrics_url))


def scrape_until(hive: Hive, condition: Callable[[Exposition], bool], what: str) -> Exposition:
    """Scrape until ``condition`` holds: for gauges refreshed by a timer, never for actor work."""
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    while True:
        exposition = scrape(hive)
        if condition(exposition):
            return exposition
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {SCRAPE_DEADLINE_S} s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- fixtures and helpers


def script(messages: list[Message]) -> Reply:
    """``tool_loop_script``, plus: a prompt starting with 'fail' makes the model itself fail."""
    if messages[-1].role == "user" and messages[-1].text.startswith("fail"):
        raise RuntimeError("the scripted model is down")
    return tool_loop_script(messages)


def start(workspace: Path, **options: Any) -> Hive:
    options.setdefault("store", "memory")
    options.setdefault("llm", ScriptedLlm(script))
    options.setdefault("metrics", MetricsConfig(port=0))
    return Hive.start(workspace=workspace, **options)


@pytest.fixture
def metered(workspace: Path) -> Iterator[Hive]:
    """A memory-store Hive serving its metrics on a free port."""
    with start(workspace) as hive:
        yield hive


def ask_confirmation(hive: Hive, session_id: str, prompt: str = "write it") -> tuple[TurnStream, str]:
    """Start a turn that blocks on a write_file confirmation; returns the stream and the tool id."""
    stream = hive.generate_streaming(session_id, prompt)
    for event in stream:
        if isinstance(event, ConfirmationRequired):
            return stream, event.tool_id
    raise AssertionError(f"the turn of {session_id!r} ended without asking for a confirmation")


def crash_next_turn_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next TurnEvents batch handled by any session actor raise: a bug that crashes the actor."""
    original = session_module.SessionActor.on_TurnEvents
    crashes: list[object] = []

    def broken(self: Any, message: Any) -> Any:
        if not crashes:
            crashes.append(message)
            raise RuntimeError("injected handler bug")
        return original(self, message)

    monkeypatch.setattr(session_module.SessionActor, "on_TurnEvents", broken)


def metric_objects(hive: Hive) -> list[Any]:
    metric_type = prometheus_client.metrics.MetricWrapperBase
    return [value for value in vars(hive.metrics).values() if isinstance(value, metric_type)]


# --------------------------------------------------------------------------- turns, LLM, tools


def test_turns_llm_calls_tools_and_tokens_are_counted(metered: Hive) -> None:
    for session_id in ("a", "b", "c"):
        metered.create_session(session_id)
    metered.create_session("short", SessionConfig(max_tool_rounds=1))
    for n in range(7):
        if n % 2:
            metered.generate("abc"[n % 3], f"look {n}")
        else:
            metered.generate_streaming("abc"[n % 3], f"look {n}").result(timeout=30)
    with pytest.raises(TurnFailed, match="max_tool_rounds"):
        metered.generate("short", "look once")  # one LLM call and one tool call, then out of rounds
    with pytest.raises(TurnFailed, match="scripted model is down"):
        metered.generate("a", "fail now")

    m = scrape(metered)
    assert m.get("sessionhive_turns_total", outcome="completed") == 7
    assert m.get("sessionhive_turns_total", outcome="error") == 2
    assert m.value("sessionhive_turns_total", outcome="cancelled") in (None, 0)
    assert m.get("sessionhive_turn_duration_seconds_count", outcome="completed") == 7
    assert m.get("sessionhive_turn_duration_seconds_count", outcome="error") == 2
    assert m.get("sessionhive_turn_duration_seconds_sum", outcome="completed") > 0
    assert m.get("sessionhive_turn_duration_seconds_bucket", outcome="completed", le="+Inf") == 7

    scripted = {"provider": "scripted", "model": "scripted"}
    assert m.get("sessionhive_llm_request_duration_seconds_count", outcome="ok", **scripted) == 7 * 2 + 1
    assert m.get("sessionhive_llm_request_duration_seconds_count", outcome="error", **scripted) == 1
    spent = [metered.usage(session_id) for session_id in ("a", "b", "c", "short")]
    assert m.get("sessionhive_llm_tokens_total", kind="prompt", **scripted) == sum(
        u.prompt_tokens for u in spent
    )
    completion = sum(u.completion_tokens for u in spent)
    assert m.get("sessionhive_llm_tokens_total", kind="completion", **scripted) == completion > 0

    assert m.get("sessionhive_tool_calls_total", tool="list_dir", outcome="ok") == 8
    assert m.get("sessionhive_turns_in_flight") == 0
    assert m.get("sessionhive_turn_queue_depth") == 0


def test_tool_outcomes_by_tool(workspace: Path) -> None:
    def tools_script(messages: list[Message]) -> Reply:
        last = messages[-1]
        if last.role == "tool":
            return Reply("done")
        if last.text == "bad json":
            return Reply("oops", [ToolCall("read_file", '{"path": ')])
        if last.text == "secret":
            return Reply("try", [ToolCall("write_file", {"path": "secret.txt", "content": "x"})])
        return Reply("read", [ToolCall("read_file", {"path": "missing.txt"})])

    deny = PermissionPolicy((PermissionRule("deny", "write_file", "secret*", argument="path"),))
    with start(workspace, llm=ScriptedLlm(tools_script)) as hive:
        hive.create_session("s", SessionConfig(permission_policy=deny))
        hive.generate("s", "bad json")
        hive.generate("s", "secret")
        hive.generate("s", "read a missing file")
        m = scrape(hive)
    assert m.get("sessionhive_tool_calls_total", tool="read_file", outcome="invalid_arguments") == 1
    assert m.get("sessionhive_tool_calls_total", tool="write_file", outcome="denied") == 1
    assert m.get("sessionhive_tool_calls_total", tool="read_file", outcome="error") == 1
    assert not (workspace / "secret.txt").exists()


# --------------------------------------------------------------------------- confirmations


def test_confirmations_pending_then_resolved_by_outcome(metered: Hive, workspace: Path) -> None:
    quick = ConfirmationPolicy(timeout_s=0.2)
    for session_id in ("yes", "no", "cancel"):
        metered.create_session(session_id)
    metered.create_session("late", SessionConfig(confirmation_policy=quick))

    yes, yes_tool = ask_confirmation(metered, "yes")
    no, no_tool = ask_confirmation(metered, "no")
    m = scrape(metered)
    assert m.get("sessionhive_confirmations_pending") == 2
    assert m.get("sessionhive_turns_in_flight") == 2

    assert metered.confirm_tool("yes", yes_tool, True)
    assert metered.confirm_tool("no", no_tool, False, "not today")
    assert scrape(metered).get("sessionhive_confirmations_pending") == 0
    yes.result(timeout=30)
    no.result(timeout=30)

    metered.generate("late", "write when nobody answers")  # the 0.2 s policy timeout rejects it

    cancelled, _ = ask_confirmation(metered, "cancel")
    queued = [metered.generate_streaming("cancel", f"look {n}") for n in range(2)]
    m = scrape(metered)
    assert m.get("sessionhive_confirmations_pending") == 1
    assert m.get("sessionhive_turn_queue_depth") == 2
    assert metered.cancel_operation("cancel")
    for stream in (cancelled, *queued):
        with pytest.raises(TurnCancelled):
            stream.result(timeout=30)

    m = scrape(metered)
    assert m.get("sessionhive_confirmations_pending") == 0
    assert m.get("sessionhive_turn_queue_depth") == 0
    assert m.get("sessionhive_turns_in_flight") == 0
    for outcome in ("approved", "rejected", "timed_out", "cancelled"):
        assert m.get("sessionhive_confirmations_total", outcome=outcome) == 1, outcome
    assert m.get("sessionhive_tool_calls_total", tool="write_file", outcome="ok") == 1
    assert m.get("sessionhive_tool_calls_total", tool="write_file", outcome="rejected") == 1
    assert m.get("sessionhive_tool_calls_total", tool="write_file", outcome="timed_out") == 1
    assert m.get("sessionhive_turns_total", outcome="completed") == 3
    assert m.get("sessionhive_turns_total", outcome="cancelled") == 1  # queued turns never started
    assert (workspace / "out.txt").read_text() == "write it"


def test_a_turn_ended_by_destroy_is_counted_as_cancelled(metered: Hive) -> None:
    metered.create_session("s")
    stream, _ = ask_confirmation(metered, "s")
    metered.destroy_session("s")
    with pytest.raises(TurnCancelled):
        stream.result(timeout=30)
    m = scrape(metered)
    assert m.get("sessionhive_confirmations_pending") == 0
    assert m.get("sessionhive_confirmations_total", outcome="cancelled") == 1
    assert m.get("sessionhive_turns_in_flight") == 0
    assert m.value("sessionhive_turns_total", outcome="cancelled") == 1
    assert m.value("sessionhive_turn_duration_seconds_count", outcome="cancelled") == 1


# --------------------------------------------------------------------------- sessions


def test_a_fresh_hive_exposes_its_fixed_label_sets_at_zero(metered: Hive) -> None:
    # A rule such as "errors / all turns" needs the error series before the first error:
    # Prometheus sees no series for a label value that was never used.
    m = scrape(metered)
    for outcome in ("completed", "error", "cancelled"):
        assert m.get("sessionhive_turns_total", outcome=outcome) == 0
        assert m.get("sessionhive_turn_duration_seconds_count", outcome=outcome) == 0
    for outcome in ("approved", "rejected", "timed_out", "cancelled"):
        assert m.get("sessionhive_confirmations_total", outcome=outcome) == 0
    for event in ("created", "destroyed", "activated", "passivated", "restarted", "failed"):
        assert m.get("sessionhive_session_lifecycle_total", event=event) == 0
    assert m.get("sessionhive_calls_rejected_total", queue="mailbox") == 0
    assert m.get("sessionhive_compactions_total", trigger="auto") == 0
    assert m.get("sessionhive_persistence_rows_written_total", table="messages") == 0
    metered.create_session("s")
    metered.generate("s", "look around")
    m = scrape(metered)
    assert m.get("sessionhive_turns_total", outcome="completed") == 1
    assert m.get("sessionhive_turns_total", outcome="error") == 0
    assert "session_id" not in m.label_names()


def test_lifecycle_counters_and_live_sessions(workspace: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    with start(workspace, store=store) as hive:
        hive.create_session("parent")
        hive.create_child_session("parent", "child")
        hive.create_session("other")
        hive.create_session("idle")
        m = scrape(hive)
        assert m.get("sessionhive_session_lifecycle_total", event="created") == 4
        assert m.get("sessionhive_live_sessions") == 4
        hive.destroy_session("parent")  # and its child
        m = scrape(hive)
        assert m.get("sessionhive_session_lifecycle_total", event="destroyed") == 2
        assert m.get("sessionhive_live_sessions") == 2
    with start(workspace, store=store, idle_timeout=0.05) as hive:  # as a new process would
        m = scrape(hive)
        assert m.get("sessionhive_live_sessions") == 0
        assert m.get("sessionhive_session_lifecycle_total", event="created") == 0
        hive.restore_session_by_id("other")
        hive.restore_session_by_id("idle")
        assert scrape(hive).get("sessionhive_session_lifecycle_total", event="activated") == 2
        # Idle sessions are passivated by the supervisor's tick (a timer): poll for it.
        m = scrape_until(hive, lambda e: e.value("sessionhive_live_sessions") == 0, "passivating both")
        assert m.get("sessionhive_session_lifecycle_total", event="passivated") == 2
        assert hive.history("idle") == []  # activates it again
        assert scrape(hive).get("sessionhive_session_lifecycle_total", event="activated") == 3


def test_a_restarted_session_is_counted(metered: Hive, monkeypatch: pytest.MonkeyPatch) -> None:
    metered.create_session("s")
    metered.generate("s", "look first")
    crash_next_turn_event(monkeypatch)
    with pytest.raises(TurnFailed, match="crashed"):
        metered.generate("s", "look crash")
    metered.generate("s", "look again")
    m = scrape(metered)
    assert m.get("sessionhive_session_lifecycle_total", event="restarted") == 1
    assert m.get("sessionhive_session_lifecycle_total", event="created") == 1
    assert m.get("sessionhive_live_sessions") == 1
    assert m.get("sessionhive_turns_in_flight") == 0


def test_a_restart_is_not_also_counted_as_an_activation(
    metered: Hive, monkeypatch: pytest.MonkeyPatch
) -> None:
    metered.create_session("s")  # storage="default": restarted from the store
    crash_next_turn_event(monkeypatch)
    with pytest.raises(TurnFailed, match="crashed"):
        metered.generate("s", "look crash")
    # The restarted session has the crashed turn from its journal, closed.
    assert [m.text for m in metered.history("s") if m.role == "user"] == ["look crash"]
    m = scrape(metered)
    assert m.get("sessionhive_session_lifecycle_total", event="restarted") == 1
    assert m.get("sessionhive_session_lifecycle_total", event="activated") == 0


# Answered before the commit: what these tests count happens in the persistence actor's own time.
BATCHED = SessionConfig(durability="batched")


def test_actor_message_counters_by_actor_and_kind(workspace: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    with start(workspace, store=store, flush_interval=3600) as hive:
        for n in range(3):
            hive.create_session(f"s{n}", BATCHED)
        for n in range(3):
            hive.generate(f"s{n}", "look")
        for _ in range(5):
            hive.history("s0")
        hive.flush()
        hive.flush()
        m = scrape(hive)
    messages = "sessionhive_actor_messages_total"
    assert m.get(messages, actor="supervisor", kind="Create") == 3
    # Calls for live sessions go straight to their mailboxes, and reads of a
    # live session answer from its published view: neither is a message.
    assert m.value(messages, actor="supervisor", kind="Route") is None
    assert m.get(messages, actor="session", kind="Generate") == 3
    assert m.get(messages, actor="session", kind="JobFinished") == 3
    assert not any(
        "history" in kind.lower() for _name, labels in m.series() for key, kind in labels if key == "kind"
    )
    # A snapshot per change: the create, then per turn the journal's five steps
    # (the prompt, the model's answer, the tool about to run, its result, the
    # final answer) and the turn's end; those of one session within 2 ms leave
    # the event loop as one (a turn may even join its session's create). Nothing is written before the flush
    # (flush_interval=3600), so each save after a session's first is coalesced.
    saves = m.get(messages, actor="persistence", kind="Save")
    assert 3 <= saves <= 3 + 3 * 6
    assert m.get(messages, actor="persistence", kind="Flush") == 2
    assert m.get("sessionhive_persistence_coalesced_snapshots_total") == saves - 3


def test_mailbox_depth_shows_a_backed_up_persistence_actor(workspace: Path) -> None:
    store = GatedStore()
    with start(workspace, store=store, batch_size=1) as hive:
        try:
            for n in range(30):
                hive.create_session(f"s{n}", BATCHED)  # answered before the write
            assert store.writing.wait(SCRAPE_DEADLINE_S), "the first write never started"
            # The first write hangs; the other 29 snapshots wait in the persistence mailbox.
            m = scrape_until(
                hive,
                lambda e: (e.value("sessionhive_mailbox_depth", actor="persistence") or 0) >= 29,
                "the persistence mailbox depth reaching 29",
            )
            # The gauge is per actor kind: the stuck store backs up the persistence actor only.
            assert m.get("sessionhive_mailbox_depth", actor="supervisor") == 0
            assert m.get("sessionhive_mailbox_depth", actor="session") == 0
        finally:
            store.gate.set()
        hive.flush()
        m = scrape_until(
            hive,
            lambda e: e.value("sessionhive_mailbox_depth", actor="persistence") == 0,
            "the persistence mailbox draining",
        )
        assert m.get("sessionhive_persistence_pending_snapshots") == 0
        assert m.get("sessionhive_persistence_batch_size_count") == 30  # batch_size=1
        assert len(store.list_ids()) == 30


class GatedStore(MemoryStore):
    """A MemoryStore whose writes wait until the test opens :attr:`gate`: a store that hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.writing = threading.Event()

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None:
        self.writing.set()
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        super().write_batch(snapshots, deletes)


# --------------------------------------------------------------------------- compaction, persistence, events


def test_compactions_by_trigger(workspace: Path) -> None:
    auto = SessionConfig(auto_compact=True, auto_compact_threshold=0.01, max_context_length=100)
    with start(workspace) as hive:
        hive.create_session("manual")
        hive.create_session("auto", auto)
        for n in range(8):  # 32 messages: enough for compaction to summarise
            hive.generate("manual", f"look {n}")
        subscription = hive.subscribe("auto")
        for n in range(8):
            hive.generate("auto", f"look {n}")
        hive.clear("auto")  # runs after any automatic compaction, so its event is already out
        subscription.close()
        compacted = [event for event in subscription if isinstance(event, ContextCompacted)]
        hive.compact("manual")
        m = scrape(hive)
    assert [event.trigger for event in compacted] == ["auto"]
    assert m.get("sessionhive_compactions_total", trigger="manual") == 1
    assert m.get("sessionhive_compactions_total", trigger="auto") == 1


def test_compaction_summaries_count_as_llm_calls(metered: Hive) -> None:
    metered.create_session("s")
    for n in range(8):
        metered.generate("s", f"look {n}")
    before = scrape(metered)
    metered.compact("s")
    after = scrape(metered)
    scripted = {"provider": "scripted", "model": "scripted", "outcome": "ok"}
    calls = "sessionhive_llm_request_duration_seconds_count"
    assert after.get(calls, **scripted) == before.get(calls, **scripted) + 1
    prompt = after.get("sessionhive_llm_tokens_total", provider="scripted", model="scripted", kind="prompt")
    assert prompt == metered.usage("s").prompt_tokens


def test_persistence_metrics_on_a_real_sqlite_store(workspace: Path, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'hive.db'}"
    with start(workspace, store=store, flush_interval=3600, batch_size=1000) as hive:
        for n in range(5):
            hive.create_session(f"s{n}", BATCHED)
        hive.generate("s0", "look")
        hive.create_session("volatile", SessionConfig(storage="memory"))
        assert [status for _, status in hive.store_health()] == ["ok"]  # answered after the saves
        m = scrape(hive)
        assert m.get("sessionhive_persistence_pending_snapshots") == 5
        # s0's create and its turn's snapshots (up to five journal steps and the
        # end) are pending as one: every save after a session's first is coalesced.
        saves = m.get("sessionhive_actor_messages_total", actor="persistence", kind="Save")
        assert 5 <= saves <= 5 + 6
        assert m.get("sessionhive_persistence_coalesced_snapshots_total") == saves - 5
        assert m.get("sessionhive_persistence_batch_size_count") == 0
        hive.flush()
        m = scrape(hive)
        assert m.get("sessionhive_persistence_pending_snapshots") == 0
        assert m.get("sessionhive_persistence_batch_size_count") == 1
        assert m.get("sessionhive_persistence_batch_size_sum") == 5
        assert m.get("sessionhive_persistence_flush_duration_seconds_count") == 1
        assert m.get("sessionhive_persistence_rows_written_total", table="sessions") == 5
        assert m.get("sessionhive_persistence_rows_written_total", table="messages") == 4
        assert m.get("sessionhive_persistence_failures_total") == 0
        assert m.get("sessionhive_persistence_retries_total") == 0
        hive.destroy_session("s1")
        hive.flush()
        m = scrape(hive)
        assert m.get("sessionhive_persistence_pending_snapshots") == 0
        assert m.get("sessionhive_persistence_batch_size_count") == 2


def test_dropped_subscriber_events_are_counted(workspace: Path) -> None:
    with start(workspace, subscriber_queue_size=2) as hive:
        hive.create_session("s", NO_CONFIRM)
        subscription = hive.subscribe("s")  # never read
        try:
            events = list(hive.generate_streaming("s", "look at everything"))
            m = scrape(hive)
        finally:
            subscription.close()
    assert len(events) > 2
    assert m.get("sessionhive_subscriber_events_dropped_total") == len(events) - 2


# --------------------------------------------------------------------------- exposition and mounting


def test_wsgi_app_served_over_http(metered: Hive) -> None:
    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    metered.create_session("s")
    metered.generate("s", "look")
    server = make_server("127.0.0.1", 0, metered.wsgi_app(), handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        m = parse(fetch(f"http://127.0.0.1:{server.server_port}/metrics"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert m.get("sessionhive_turns_total", outcome="completed") == 1
    assert m.get("sessionhive_live_sessions") == 1
    assert m.get("sessionhive_tool_calls_total", tool="list_dir", outcome="ok") == 1


def test_asgi_app_answers_a_real_asgi_call(metered: Hive) -> None:
    metered.create_session("s")
    metered.generate("s", "look")
    metered.flush()  # every snapshot written: the two scrapes below see the same series
    app = metered.asgi_app()

    async def get(headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[bytes, bytes], bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/metrics",
            "raw_path": b"/metrics",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
        start_message, body_message = sent
        assert start_message["type"] == "http.response.start"
        assert body_message["type"] == "http.response.body"
        return start_message["status"], dict(start_message["headers"]), body_message["body"]

    status, headers, body = asyncio.run(get([]))
    assert status == 200 and headers[b"Content-Type"].startswith(b"text/plain")
    m = parse(body.decode())
    assert m.get("sessionhive_turns_total", outcome="completed") == 1

    status, headers, body = asyncio.run(get([(b"accept-encoding", b"gzip")]))
    assert status == 200 and headers[b"Content-Encoding"] == b"gzip"
    assert parse(gzip.decompress(body).decode()).series() == m.series()


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package 'prometheus')"
)
def test_exposition_passes_promtool_check_metrics(metered: Hive) -> None:
    metered.create_session("s")
    metered.create_session("t")
    metered.generate("s", "look")
    stream, tool_id = ask_confirmation(metered, "t")
    metered.confirm_tool("t", tool_id, False)
    stream.result(timeout=30)
    with pytest.raises(TurnFailed):
        metered.generate("s", "fail")
    metered.compact("s")
    scrape_until(metered, lambda e: "sessionhive_mailbox_depth" in e.names(), "the first supervisor tick")
    text = fetch(metered.metrics_url or "")
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


# --------------------------------------------------------------------------- registries


def test_two_hives_in_one_process_have_their_own_series(workspace: Path) -> None:
    with start(workspace) as one, start(workspace) as two:
        assert one.metrics_url != two.metrics_url
        one.create_session("s")
        one.generate("s", "look")
        for n in range(3):
            two.create_session(f"s{n}")
            two.generate(f"s{n}", "look")
        first, second = scrape(one), scrape(two)
    assert first.get("sessionhive_turns_total", outcome="completed") == 1
    assert second.get("sessionhive_turns_total", outcome="completed") == 3
    assert first.get("sessionhive_live_sessions") == 1
    assert second.get("sessionhive_live_sessions") == 3


def test_a_registry_passed_in_is_the_one_used(workspace: Path) -> None:
    registry = CollectorRegistry()
    with start(workspace, metrics=MetricsConfig(registry=registry)) as hive:
        assert hive.metrics_url is None  # no port: no server
        assert hive.metrics.registry is registry
        hive.create_session("s")
        hive.generate("s", "look")
        m = parse(prometheus_client.generate_latest(registry).decode())
    assert m.get("sessionhive_turns_total", outcome="completed") == 1


def test_joining_the_global_registry(workspace: Path) -> None:
    hive = start(workspace, metrics=MetricsConfig(port=0, registry=prometheus_client.REGISTRY))
    try:
        with hive:
            hive.create_session("s")
            hive.generate("s", "look")
            served = scrape(hive)
            default = parse(prometheus_client.generate_latest().decode())
    finally:
        for metric in metric_objects(hive):  # leave the process-wide registry as it was
            try:
                prometheus_client.REGISTRY.unregister(metric)
            except KeyError:
                pass
    assert served.get("sessionhive_turns_total", outcome="completed") == 1
    assert default.get("sessionhive_turns_total", outcome="completed") == 1
    assert "process_cpu_seconds_total" in served.names() or "python_info" in served.names()


def test_a_hive_can_join_the_global_registry_again_after_another_stopped(workspace: Path) -> None:
    joined = MetricsConfig(registry=prometheus_client.REGISTRY)
    hives: list[Hive] = []
    try:
        hives.append(start(workspace, metrics=joined))
        hives[0].stop()
        hives.append(start(workspace, metrics=joined))
        hives[1].create_session("s")
        hives[1].generate("s", "look")
        assert (
            prometheus_client.REGISTRY.get_sample_value("sessionhive_turns_total", {"outcome": "completed"})
            == 1
        )
    finally:
        for hive in hives:
            hive.stop()
            for metric in metric_objects(hive):
                try:
                    prometheus_client.REGISTRY.unregister(metric)
                except KeyError:
                    pass


def test_two_hives_on_one_registry_fail_with_a_clear_error(workspace: Path) -> None:
    shared = MetricsConfig(registry=CollectorRegistry())
    with start(workspace, metrics=shared), pytest.raises(SessionhiveError, match="registry"):
        start(workspace, metrics=shared).stop()


# --------------------------------------------------------------------------- what must never be exposed


def test_no_session_label_no_session_id_and_no_api_key(workspace: Path, openai_server: OpenAiServer) -> None:
    secret = "sk-metrics-" + uuid.uuid4().hex
    session_ids = [f"tenant-{uuid.uuid4().hex[:12]}" for _ in range(3)]
    with start(workspace) as hive:
        for session_id in session_ids:
            hive.create_session(session_id)
            hive.generate(session_id, "look")
        stream, tool_id = ask_confirmation(hive, session_ids[0])
        hive.confirm_tool(session_ids[0], tool_id, True)
        stream.result(timeout=30)
        keyed = session_ids[1]
        config = LlmConfig(
            "openai", "gpt-metrics-test", api_key=secret, base_url=openai_server.url, max_retries=0
        )
        hive.configure(keyed, model_config=config)
        openai_server.script(ReplySpec("hello"), FaultSpec(401))  # the 401 body echoes the key
        hive.generate(keyed, "hello")
        with pytest.raises(LlmError):
            hive.generate(keyed, "again")
        m = scrape(hive)
    assert openai_server.received_key(openai_server.requests[0]) == secret  # it was really used
    openai = {"provider": "openai", "model": "gpt-metrics-test"}
    assert m.get("sessionhive_llm_request_duration_seconds_count", outcome="ok", **openai) == 1
    assert m.get("sessionhive_llm_request_duration_seconds_count", outcome="error", **openai) == 1
    assert m.get("sessionhive_llm_tokens_total", kind="prompt", **openai) == 11  # as the server reported
    assert not {label for label in m.label_names() if "session" in label.lower()}
    for session_id in session_ids:
        assert session_id not in m.text
    assert secret not in m.text and secret[-12:] not in m.text


def test_llm_retries_are_counted_once_per_retry(workspace: Path, openai_server: OpenAiServer) -> None:
    with start(workspace) as hive:
        hive.create_session("s")
        config = LlmConfig(
            "openai", "gpt-metrics-test", api_key="sk-x", base_url=openai_server.url, max_retries=2
        )
        hive.configure("s", model_config=config)
        openai_server.script(FaultSpec(503, retry_after="0"), ReplySpec("fine"))
        assert hive.generate("s", "hello").text == "fine"
        m = scrape(hive)
    assert len(openai_server.requests) == 2
    assert m.value("sessionhive_llm_retries_total", provider="openai") == 1
    openai = {"provider": "openai", "model": "gpt-metrics-test", "outcome": "ok"}
    assert m.get("sessionhive_llm_request_duration_seconds_count", **openai) == 1


# --------------------------------------------------------------------------- cardinality


def run_sessions(hive: Hive, ids: Sequence[str]) -> None:
    """Create ``ids`` and run one short turn in each, all at once."""
    for session_id in ids:
        hive.create_session(session_id)
    streams = [hive.generate_streaming(session_id, "hi") for session_id in ids]
    for stream in streams:
        assert stream.result(timeout=60).text == "ok"
    hive.flush()


@pytest.mark.slow
def test_series_do_not_grow_with_the_number_of_sessions(workspace: Path) -> None:
    llm = ScriptedLlm([Reply("ok")])
    with start(workspace, llm=llm, actor_backend="pooled", flush_interval=3600) as hive:
        run_sessions(hive, [f"few-{n}" for n in range(5)])
        # Wait for one supervisor tick, so that its message counter exists in both scrapes.
        few = scrape_until(
            hive,
            lambda e: (
                e.value("sessionhive_actor_messages_total", actor="supervisor", kind="Tick") is not None
            ),
            "the first tick",
        )
        run_sessions(hive, [f"many-{n:04d}" for n in range(5_000 - 5)])
        many = scrape(hive)
    assert many.get("sessionhive_turns_total", outcome="completed") == 5_000
    assert many.get("sessionhive_session_lifecycle_total", event="created") == 5_000
    assert many.series() == few.series(), many.series() ^ few.series()
    assert len(many.text) < 2 * len(few.text)
