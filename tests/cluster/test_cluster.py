"""The cluster on a real local Ray and PostgreSQL: API parity, a killed shard, rebalance, split brain.

One Ray instance serves the whole module (starting Ray costs seconds); each
test gets its own PostgreSQL schema and its own shards. Faults are real: a
shard's process gets SIGKILL or SIGSTOP/SIGCONT.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydantic
import pytest

ray = pytest.importorskip("ray")

from sessionhive import (  # noqa: E402 - after the importorskip
    AgentResult,
    CallTimeout,
    ConfirmationPolicy,
    ConfirmationRequired,
    ConfirmationResolved,
    Hive,
    IdempotencyConflict,
    InvalidConfig,
    OutcomeUnknown,
    OutputInvalid,
    Reply,
    RunNotFound,
    ScriptedLlm,
    SessionConfig,
    SessionExists,
    SessionNotFound,
    ToolCall,
    TurnEnd,
)
from sessionhive.cluster import AsyncClusterHive, ClusterHive, owner_of  # noqa: E402
from sessionhive.persistence import SqlStore  # noqa: E402
from sessionhive.persistence.leases import LeaseHeld, LeaseTable  # noqa: E402
from tests.cluster.cluster_helpers import (  # noqa: E402
    SYNC,
    Load,
    fresh_schema,
    lease_rows,
    postgres_unreachable,
    two_fenced_writers,
    verify_histories,
    verify_single_writer,
    wait_until,
)

# One Ray per machine at a time: every test that starts Ray runs in one xdist worker, one after another.
pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("ray")]

TOOL_SCRIPT = [Reply("looking", [ToolCall("list_dir", {"path": "."})]), Reply("done")]


class Forecast(pydantic.BaseModel):
    city: str
    celsius: int


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    reason = postgres_unreachable()
    if reason is not None:
        pytest.skip(f"!!! PostgreSQL is NOT REACHABLE, cluster tests skipped: {reason}")
    ray.init(
        address="local",  # never a Ray that another test run on this machine started
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=2,
        object_store_memory=100 * 1024 * 1024,
        namespace="sessionhive-tests",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture
def pg_url(local_ray: None) -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def ids_on(shard: str, shards: list[str], count: int, prefix: str) -> list[str]:
    """``count`` session ids that rendezvous hashing places on ``shard``."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        candidate = f"{prefix}{i}"
        if owner_of(candidate, shards) == shard:
            found.append(candidate)
        i += 1
    return found


# --------------------------------------------------------------------------- placement (no Ray)


def test_rendezvous_placement_moves_only_the_sessions_of_the_shard_that_changed() -> None:
    ids = [f"s{i}" for i in range(3000)]
    two = {sid: owner_of(sid, ["a", "b"]) for sid in ids}
    three = {sid: owner_of(sid, ["a", "b", "c"]) for sid in ids}
    moved = [sid for sid in ids if two[sid] != three[sid]]
    assert all(three[sid] == "c" for sid in moved)  # joining: only sessions the newcomer wins move
    assert 800 < len(moved) < 1200  # about a third
    back = {sid: owner_of(sid, ["a", "b"]) for sid in ids}
    assert back == two  # and leaving puts exactly those back


# --------------------------------------------------------------------------- leases and the fence (no Ray)


def test_the_write_fence_refuses_a_writer_whose_lease_was_taken_over() -> None:
    from tests.persistence.conftest_persistence import make_snapshot

    with two_fenced_writers(0.3, 30.0) as (store_a, a, store_b, b):
        assert a.acquire("s").epoch == 1
        store_a.write_batch([make_snapshot("s", 1, 2)], [])
        with pytest.raises(LeaseHeld):
            b.acquire("s")  # a holds it
        wait_until(lambda: not a.is_valid("s"), 5, "a's lease runs out (a paused writer)")
        taken = b.acquire("s")
        assert taken.epoch == 2 and not taken.taken_over
        store_b.write_batch([make_snapshot("s", 3, 6)], [])
        # a wakes up and writes what it had: refused, nothing of it lands.
        store_a.write_batch([make_snapshot("s", 4, 8, prefix="stale")], ["s"])
        assert store_a.last_fenced == {"s"} and a.fenced_total == 1
        stored = store_b.load("s")
        assert stored is not None and stored.version == 3 and len(stored.messages) == 6
        assert a.renew() == ["s"]  # a learns it lost the lease
        with pytest.raises(LeaseHeld):
            a.acquire("s")  # b still holds it
        b.release(["s"])
        assert a.acquire("s").taken_over  # back to a, which knows its memory of "s" is stale


def test_a_copy_read_without_the_lease_is_refused_once_another_owner_had_the_session() -> None:
    from tests.persistence.conftest_persistence import make_snapshot

    with two_fenced_writers(30.0, 0.3) as (store_a, a, store_b, b):
        b.acquire("s")
        store_b.write_batch([make_snapshot("s", 5, 10)], [])
        wait_until(lambda: not b.is_valid("s"), 5, "b's lease runs out")
        # a holds an older copy it never won the lease for: expired or not, b's writes stand.
        store_a.write_batch([make_snapshot("s", 2, 4, prefix="stale")], [])
        assert store_a.last_fenced == {"s"}
        stored = store_b.load("s")
        assert stored is not None and stored.version == 5 and len(stored.messages) == 10
        # Once a wins the lease (and so reads the session afresh), its writes go through.
        assert a.acquire("s").changed_hands
        store_a.write_batch([make_snapshot("s", 6, 12)], [])
        assert store_a.last_fenced == frozenset()


# --------------------------------------------------------------------------- API parity


def test_cluster_api_parity_with_a_local_hive(pg_url: str, tmp_path: Path) -> None:
    sd_file = tmp_path / "targets.json"
    with ClusterHive.start(
        shards=2,
        store=pg_url,
        llm=ScriptedLlm(TOOL_SCRIPT),
        workspace=str(tmp_path),
        lease_ttl=3.0,
        metrics_sd_file=sd_file,
    ) as hive:
        assert hive.shards == ["shard-0", "shard-1"]
        assert hive.create_session("alice") == "alice"
        assert hive.get_or_create_session("alice") == "alice"  # exists: no error, no new session
        hive.create_child_session("alice", "alice/researcher")
        assert hive.get_or_create_session("alice/researcher") == "alice/researcher"
        assert hive.shard_of("alice/researcher") == hive.shard_of("alice")  # a tree lives on one shard
        assert hive.get_child_sessions("alice") == ["alice/researcher"]
        assert hive.is_child_session("alice/researcher") is True

        result = hive.generate("alice", "what is here?")
        assert result.text == "done" and result.rounds == 2
        assert [m.role for m in hive.history("alice")] == ["user", "assistant", "tool", "assistant"]
        assert hive.usage("alice").total_tokens > 0
        assert hive.context_usage("alice").used_tokens > 0

        # Streaming with a human in the loop: the confirmation travels back through the shard.
        hive.create_session(
            "bob", SessionConfig(confirmation_policy=ConfirmationPolicy(require_confirmation="all"))
        )
        stream = hive.generate_streaming("bob", "look around")
        seen: list[str] = []
        deciders: list[str | None] = []
        for event in stream:
            seen.append(event.type)
            if isinstance(event, ConfirmationRequired):
                assert hive.pending_confirmations("bob") == [event.tool_id]
                assert hive.confirm_tool("bob", event.tool_id, approved=True, decided_by="carol")
            if isinstance(event, ConfirmationResolved):
                deciders.append(event.decided_by)
        assert stream.result().text == "done"
        assert deciders == ["carol"]  # who decided crosses the shard too
        assert seen[0] == "TurnStart" and seen[-1] == "TurnEnd"
        assert "ConfirmationRequired" in seen and "ConfirmationResolved" in seen and "ToolEnd" in seen

        # The errors are sessionhive's own classes, not Ray's wrappers.
        with pytest.raises(SessionNotFound) as missing:
            hive.history("nobody")
        assert type(missing.value) is SessionNotFound
        with pytest.raises(SessionExists):
            hive.create_session("alice")
        with pytest.raises(SessionNotFound):
            hive.create_child_session("nobody", "nobody/kid")
        with pytest.raises(InvalidConfig):
            hive.generate("alice", 42)  # type: ignore[arg-type]
        assert hive.pause_session("alice") is True
        with pytest.raises(Exception) as paused:
            hive.generate("alice", "again")
        assert type(paused.value).__name__ == "SessionPaused"
        assert hive.resume_session("alice") is True
        assert hive.reset_session("alice") is False  # it never failed

        with hive.subscribe("alice") as subscription:
            hive.generate("alice", "once more")
            first = subscription.get(timeout=10)
            assert first is not None and first.type == "TurnStart"

        hive.configure("alice", thinking=True, budget=500)
        hive.clear("alice")
        assert hive.history("alice") == []
        assert sorted(hive.list_sessions()) == ["alice", "alice/researcher", "bob"]
        assert hive.session_count() == 3
        assert hive.live_session_count() == 3
        assert [status for _name, status in hive.store_health()] == ["ok", "ok"]
        assert {t.name for t in hive.list_tools()} >= {"read_file", "list_dir"}
        hive.destroy_session("alice")
        with pytest.raises(SessionNotFound):
            hive.history("alice/researcher")  # the cascade reached the child on the same shard
        hive.flush()

        # Operations: each shard serves /metrics with its shard label; file_sd lists them all.
        targets = json.loads(sd_file.read_text())
        assert sorted(t["labels"]["shard"] for t in targets) == ["shard-0", "shard-1"]
        for target in targets:
            body = (
                urllib.request.urlopen(f"http://{target['targets'][0]}/metrics", timeout=10).read().decode()
            )
            assert f'shard="{target["labels"]["shard"]}"' in body
            assert "sessionhive_turns_total" in body or "sessionhive_live_sessions" in body
            assert "session_id" not in body
        info = hive.shard_info()
        assert all(entry["metrics"].startswith("127.0.0.1:") for entry in info.values())

    stored = SqlStore(pg_url)
    try:
        assert stored.list_ids() == ["bob"]  # stop flushed; the destroyed tree is gone
    finally:
        stored.close()
    assert not sd_file.exists()


def test_on_confirmation_answers_a_cluster_turns_confirmations_on_either_facade(
    pg_url: str, tmp_path: Path
) -> None:
    asked: list[str] = []

    def approve(event: ConfirmationRequired) -> bool:
        asked.append(event.tool_name)
        return True

    async def reject(event: ConfirmationRequired) -> tuple[bool, str]:
        asked.append(event.tool_name)
        return False, "not now"

    with ClusterHive.start(
        shards=1, store=pg_url, llm=ScriptedLlm(TOOL_SCRIPT), workspace=str(tmp_path)
    ) as hive:
        hive.create_session(
            "carol", SessionConfig(confirmation_policy=ConfirmationPolicy(require_confirmation="all"))
        )
        assert hive.generate("carol", "look around", timeout=60, on_confirmation=approve).text == "done"
        # The asyncio facade the sync one runs on, driven from another event loop.
        again = asyncio.run(hive.aio.generate("carol", "again", timeout=60, on_confirmation=reject))
        assert again.text == "done"
        assert asked == ["list_dir", "list_dir"]
        tools = [m for m in hive.history("carol") if m.role == "tool"]
        assert len(tools) == 2 and "not now" in tools[1].text and "not now" not in tools[0].text
        assert hive.pending_confirmations("carol") == []


def test_async_cluster_hive_streams_and_raises_like_async_hive(pg_url: str) -> None:
    async def scenario() -> None:
        async with AsyncClusterHive.start(shards=2, store=pg_url, llm=ScriptedLlm([Reply("hi")])) as hive:
            await hive.create_session("a1")
            await hive.create_child_session("a1", "a1/k")
            assert (await hive.generate("a1/k", "hello")).text == "hi"
            stream = await hive.generate_streaming("a1", "yo")
            events = [event async for event in stream]
            assert isinstance(events[-1], TurnEnd) and (await stream.result()).text == "hi"
            with pytest.raises(SessionNotFound):
                await hive.history("ghost")
            results = await asyncio.gather(*(hive.generate("a1", f"p{i}") for i in range(5)))
            assert [r.text for r in results] == ["hi"] * 5
            assert len(await hive.history("a1")) == 12
            assert await hive.live_session_count() == 2
            assert await hive.get_or_create_session("a2") == "a2"
            assert await hive.session_count() == 3

    asyncio.run(scenario())


def test_runs_route_by_their_session_on_both_cluster_facades(pg_url: str) -> None:
    """A run id names its session: get/wait/cancel/events reach that session's shard, with no index."""
    with ClusterHive.start(shards=2, store=pg_url, llm=ScriptedLlm(TOOL_SCRIPT * 4)) as hive:
        hive.create_session("r1", SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False)))
        run = hive.start_run("r1", "look", idempotency_key="k")
        assert hive.start_run("r1", "look", idempotency_key="k").run_id == run.run_id
        with pytest.raises(IdempotencyConflict):
            hive.start_run("r1", "other", idempotency_key="k")
        finished = hive.wait_run(run.run_id, timeout=60)
        assert finished.status == "completed" and hive.get_run(run.run_id) == finished
        events = list(hive.run_events(run.run_id))
        assert isinstance(events[-1], TurnEnd) and {e.run_id for e in events} == {run.run_id}
        assert [e.event_id for e in events] == sorted({e.event_id for e in events})
        after = list(hive.run_events(run.run_id, after=events[1].event_id))
        assert [e.event_id for e in after] == [e.event_id for e in events[2:]]
        stream = hive.generate_streaming("r1", "look again", idempotency_key="k2")
        stream.result(60)
        assert [r.run_id for r in hive.list_runs("r1")] == [run.run_id, stream.run_id]
        assert hive.cancel_run(run.run_id) is False  # finished: nothing to cancel
        with pytest.raises(RunNotFound):
            hive.get_run("run_cjE_0123456789abcdef")

        async def on_the_async_facade() -> None:
            aio = hive.aio
            started = await aio.start_run("r1", "look once more")
            assert (await aio.wait_run(started.run_id, timeout=60)).status == "completed"
            assert isinstance([e async for e in aio.run_events(started.run_id)][-1], TurnEnd)

        hive._portal.run(on_the_async_facade())


def test_async_calls_in_flight_on_a_killed_shard_end_as_outcome_unknown(pg_url: str) -> None:
    async def scenario() -> None:
        llm = ScriptedLlm([Reply("hi")], latency=0.5)
        async with AsyncClusterHive.start(
            shards=2, store=pg_url, llm=llm, lease_ttl=2.0, suspect_after=30.0
        ) as hive:
            await hive.create_session("busy", SYNC)
            subscription = await hive.subscribe("busy")
            turns = [asyncio.ensure_future(hive.generate("busy", f"busy#{i}", timeout=60)) for i in range(4)]
            started = await subscription.get(timeout=10)
            assert started is not None and started.type == "TurnStart"
            subscription.close()
            shard = await hive.shard_of("busy")
            pid = (await hive.shard_info())[shard]["pid"]
            os.kill(pid, signal.SIGKILL)
            outcomes = await asyncio.wait_for(asyncio.gather(*turns, return_exceptions=True), 60)
            # Handed over, then the shard died: nobody can say "failed", so nobody does.
            unknown = [o for o in outcomes if isinstance(o, OutcomeUnknown)]
            completed = [o for o in outcomes if isinstance(o, AgentResult)]
            assert unknown and len(unknown) + len(completed) == len(outcomes), outcomes
            assert all(result.text == "hi" for result in completed)
            assert unknown[0].run_id and "may or may not have happened" in str(unknown[0])
            # The restarted shard serves the session from the store once the dead owner's lease expired.
            restarted = lambda: hive.cluster.shard_info()[shard]["pid"] != pid  # noqa: E731
            await asyncio.to_thread(wait_until, restarted, 60, "Ray restarts the shard")
            assert (await hive.generate("busy", "busy#after", timeout=30)).text == "hi"

    asyncio.run(scenario())


def test_the_load_test_drives_a_cluster_and_verifies_every_history(pg_url: str) -> None:
    from sessionhive.cluster import cluster_hive_factory
    from sessionhive.loadtest import LoadtestOptions, run_loadtest

    options = LoadtestOptions(sessions=40, turns=2, tools_per_turn=1, concurrency=20, store=pg_url)
    report = run_loadtest(options, hive_factory=cluster_hive_factory(2))
    assert report.turns_completed == 80 and report.turns_failed == 0
    assert report.verification.ok, report.verification.mismatches


# --------------------------------------------------------------------------- failures


def test_a_killed_shard_restarts_and_its_sessions_come_back_without_losing_an_acknowledged_turn(
    pg_url: str,
) -> None:
    with ClusterHive.start(
        shards=2, store=pg_url, llm=ScriptedLlm([Reply("ok")]), lease_ttl=2.0, suspect_after=30.0
    ) as hive:
        sessions = [f"k{i}" for i in range(24)]
        for sid in sessions:
            hive.create_session(sid, SYNC)
        victim = "shard-0"
        pid = hive.shard_info()[victim]["pid"]
        with Load(hive, sessions, workers=6) as load:
            load.wait_for_turns(100)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: hive.shard_info()[victim]["pid"] != pid, 60, "Ray restarts the shard")
            before = load.acked_count()
            load.wait_for_turns(before + 100)  # the killed shard's sessions serve turns again
        assert load.interrupted > 0 or load.acked_count() > 200
        assert not load.unexpected, load.unexpected[:3]
    verify_histories(pg_url, load)


def touch_all(hive: ClusterHive, sessions: list[str]) -> None:
    """One call to every session, so each is owned (leased) by the shard it is placed on now."""
    for sid in sessions:
        hive.usage(sid)


@pytest.mark.slow
def test_rebalance_under_load_moves_only_the_sessions_whose_placement_changed(pg_url: str) -> None:
    with ClusterHive.start(
        shards=2, store=pg_url, llm=ScriptedLlm([Reply("ok")]), lease_ttl=3.0, audit_writes=True
    ) as hive:
        sessions = [f"r{i}" for i in range(30)]
        for sid in sessions:
            hive.create_session(sid, SYNC)
        with Load(hive, sessions, workers=6) as load:
            load.wait_for_turns(60)
            hive.flush()
            before = lease_rows(pg_url)
            added = hive.add_shard()
            assert hive.shards == ["shard-0", "shard-1", added]
            load.wait_for_turns(load.acked_count() + 90)
            touch_all(hive, sessions)  # a lease moves on a session's first call after the change
            after_add = lease_rows(pg_url)
            hive.remove_shard("shard-0")
            assert hive.shards == ["shard-1", added]
            load.wait_for_turns(load.acked_count() + 90)
            touch_all(hive, sessions)
            after_remove = lease_rows(pg_url)
        assert not load.unexpected, load.unexpected[:3]

    def owner_shard(row: tuple[str, int]) -> str:
        return row[0].split("@")[0]

    moved_in = [sid for sid in sessions if owner_of(sid, ["shard-0", "shard-1", added]) == added]
    assert moved_in, "some sessions must move to the new shard"
    for sid in sessions:
        if sid in moved_in:
            assert owner_shard(after_add[sid]) == added and after_add[sid][1] > before[sid][1]
        else:  # untouched by the join: same owner, same epoch
            assert after_add[sid] == before[sid]
    for sid in sessions:
        expected = owner_of(sid, ["shard-1", added])
        assert owner_shard(after_remove[sid]) == expected
        if owner_shard(after_add[sid]) != "shard-0":
            assert after_remove[sid] == after_add[sid]  # only shard-0's sessions moved on its removal
    verify_histories(pg_url, load)
    verify_single_writer(pg_url)


@pytest.mark.slow
def test_split_brain_a_paused_shard_that_lost_its_lease_cannot_overwrite_the_new_owner(pg_url: str) -> None:
    with ClusterHive.start(
        shards=2,
        store=pg_url,
        llm=ScriptedLlm([Reply("ok")], latency=1.0),
        lease_ttl=1.5,
        suspect_after=1.0,
        ping_interval=0.25,
        audit_writes=True,
    ) as hive:
        victim = ids_on("shard-0", hive.shards, 1, "v")[0]
        hive.create_session(victim, SYNC)
        hive.generate(victim, "before")
        info = hive.shard_info()
        pid = info["shard-0"]["pid"]

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            subscription = hive.subscribe(victim)
            in_flight = pool.submit(hive.generate, victim, "during-the-pause", timeout=60)
            started = subscription.get(timeout=10)
            assert started is not None and started.type == "TurnStart"
            subscription.close()
            os.kill(pid, signal.SIGSTOP)  # the turn now waits on its 1 s model call inside the shard
            try:
                # Sent to the stopped shard before anyone noticed: it sits in its queue.
                held = pool.submit(hive.generate, victim, "held-by-the-stopped-shard", timeout=60)
                # Neither client waits out its 60 s: the shard went silent after taking their calls.
                for call in (in_flight, held):
                    with pytest.raises(OutcomeUnknown) as unknown:
                        call.result(timeout=30)
                    assert "stopped answering" in str(unknown.value)
                assert pid_is_stopped(pid)
                # The other shard takes the session over once the lease expired, and writes.
                assert hive.generate(victim, "on-the-new-owner", timeout=30).text == "ok"
                assert pid_is_stopped(pid)  # all of it while the old owner is still stopped
            finally:
                os.kill(pid, signal.SIGCONT)
        wait_until(lambda: hive.shards == ["shard-0", "shard-1"], 20, "the shard rejoins")
        assert hive.generate(victim, "after", timeout=30).text == "ok"
        prompts = [m.text for m in hive.history(victim) if m.role == "user"]
        # The continued shard found its lease gone: its held call was handed back, not run.
        assert prompts == ["before", "on-the-new-owner", "after"]
        stats = hive.shard_info()
        assert stats["shard-0"]["fenced"] >= 1  # the paused shard tried, and the store refused
    stored = SqlStore(pg_url)
    try:
        snapshot = stored.load(victim)
        assert snapshot is not None
        assert [m.text for m in snapshot.messages if m.role == "user"] == [
            "before",
            "on-the-new-owner",
            "after",
        ]
    finally:
        stored.close()
    verify_single_writer(pg_url)


def pid_is_stopped(pid: int) -> bool:
    """Whether the process is in the stopped state (``T`` in /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def test_a_sessions_calls_keep_their_order_while_its_lease_is_awaited_and_expired_ones_never_run(
    pg_url: str,
) -> None:
    # The session exists in the store and another owner holds its lease for a while:
    # every call the cluster gets for it meanwhile waits for that lease.
    local = Hive.start(store=pg_url, llm=ScriptedLlm([Reply("ok")]))
    local.create_session("queue", SYNC)
    local.stop()
    engine = SqlStore(pg_url).engine

    async def scenario() -> list[object]:
        async with AsyncClusterHive.start(shards=1, store=pg_url, llm=ScriptedLlm([Reply("ok")])) as hive:
            # Known placement: each call below goes out as soon as it is made, in that order.
            assert await hive.shard_of("queue") == "shard-0"
            await asyncio.to_thread(LeaseTable(engine, "another-owner@1", ttl=3.0).acquire, "queue")
            calls = [hive.generate("queue", "queue#0", timeout=0.5)]  # gives up before the lease frees
            calls += [hive.generate("queue", f"queue#{n}", timeout=60) for n in range(1, 9)]
            outcomes: list[object] = list(await asyncio.gather(*calls, return_exceptions=True))
            outcomes.append(await hive.history("queue"))
            return outcomes

    *outcomes, history = asyncio.run(scenario())
    assert isinstance(outcomes[0], CallTimeout), outcomes[0]  # provably never started
    assert all(isinstance(o, AgentResult) for o in outcomes[1:]), outcomes
    assert isinstance(history, list)
    assert [m.text for m in history if m.role == "user"] == [f"queue#{n}" for n in range(1, 9)]
    engine.dispose()


def test_structured_output_through_a_cluster_on_both_facades(pg_url: str) -> None:
    """A model class stays with the caller: the shard gets its JSON Schema, the caller an instance."""
    answer = Reply('{"city": "Oslo", "celsius": -3}')
    with ClusterHive.start(shards=1, store=pg_url, llm=ScriptedLlm([answer])) as hive:
        hive.create_session("o1")
        result = hive.generate("o1", "weather?", output_schema=Forecast)
        assert result.output == Forecast(city="Oslo", celsius=-3)
        run = hive.start_run("o1", "again", output_schema={"type": "object", "required": ["city"]})
        assert hive.wait_run(run.run_id, timeout=60).output == {"city": "Oslo", "celsius": -3}
        with pytest.raises(OutputInvalid):
            hive.generate("o1", "a list?", output_schema={"type": "array"})
        again = hive._portal.run(hive.aio.generate("o1", "weather?", output_schema=Forecast))
        assert again.output == Forecast(city="Oslo", celsius=-3)
        stream = hive.generate_streaming("o1", "weather?", output_schema=Forecast)
        assert stream.result(60).output == Forecast(city="Oslo", celsius=-3)
