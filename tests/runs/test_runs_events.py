"""Run records and their events: ids, replay after an id, the waiting turn in history, kept runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionhive import (
    EventsDropped,
    Hive,
    Reply,
    RunNotFound,
    ScriptedLlm,
    TurnCancelled,
    TurnEnd,
)
from sessionhive.model.errors import CallTimeout
from sessionhive.model.events import EVENT_RING_SIZE, ConfirmationRequired
from tests.runs.runs_helpers import assert_valid_history


def test_run_events_after_an_id_gives_exactly_the_events_after_it(hive: Hive) -> None:
    hive.create_session("s")
    stream = hive.generate_streaming("s", "look")
    seen = list(stream)
    ids = [event.event_id for event in seen]
    assert ids == sorted(set(ids)) and ids[0] > 0
    assert {event.run_id for event in seen} == {stream.run_id}
    run = hive.get_run(stream.run_id)
    assert run.status == "completed" and run.last_event_id == ids[-1]
    for cut in range(len(seen)):
        replayed = list(hive.run_events(stream.run_id, after=ids[cut]))
        assert [e.event_id for e in replayed] == ids[cut + 1 :]
    assert [e.event_id for e in hive.run_events(stream.run_id)] == ids


def test_run_events_follows_a_live_run_to_its_end(hive: Hive) -> None:
    hive.create_session("s")
    stream = hive.generate_streaming("s", "write it")
    asked = next(e for e in stream if isinstance(e, ConfirmationRequired))
    reader = hive.run_events(stream.run_id, after=asked.event_id)
    hive.confirm_tool("s", asked.tool_id, True)
    rest = list(reader)
    assert rest[0].type == "ConfirmationResolved" and isinstance(rest[-1], TurnEnd)
    assert [e.event_id for e in rest] == [e.event_id for e in stream]


def test_history_shows_the_waiting_turns_prompt_and_tool_call(hive: Hive) -> None:
    hive.create_session("s")
    hive.generate("s", "look")
    before = hive.history("s")
    stream = hive.generate_streaming("s", "write it")
    asked = next(e for e in stream if isinstance(e, ConfirmationRequired))
    assert hive.get_run(stream.run_id).status == "waiting"
    history = hive.history("s")
    assert history[: len(before)] == before and not any(m.in_progress for m in before)
    prompt, call = history[len(before) :]
    assert prompt.in_progress and prompt.role == "user" and prompt.text == "write it"
    assert call.in_progress and [c.id for c in call.tool_calls] == [asked.tool_id]
    assert call.to_dict()["in_progress"] is True
    hive.confirm_tool("s", asked.tool_id, True)
    stream.result(30)
    after = hive.history("s")
    assert not any(m.in_progress for m in after) and after[len(before) : len(before) + 2] == [prompt, call]


def test_cancel_run_ends_a_waiting_run_with_a_valid_history(hive: Hive) -> None:
    hive.create_session("s")
    stream = hive.generate_streaming("s", "write it")
    next(e for e in stream if isinstance(e, ConfirmationRequired))
    queued = hive.start_run("s", "look")
    assert hive.cancel_run(queued.run_id) is True
    assert hive.get_run(queued.run_id).status == "cancelled"
    assert hive.cancel_run(stream.run_id) is True
    with pytest.raises(TurnCancelled):
        stream.result(30)
    done = hive.wait_run(stream.run_id, timeout=30)
    assert done.status == "cancelled"
    assert hive.cancel_run(stream.run_id) is False
    assert_valid_history(hive.history("s"))


def test_wait_run_times_out_and_unknown_runs_are_not_found(hive: Hive) -> None:
    hive.create_session("s")
    stream = hive.generate_streaming("s", "write it")
    next(e for e in stream if isinstance(e, ConfirmationRequired))
    with pytest.raises(CallTimeout):
        hive.wait_run(stream.run_id, timeout=0.05)
    with pytest.raises(RunNotFound):
        hive.get_run("run_bm9wZQ_0123456789abcdef")
    with pytest.raises(RunNotFound):
        hive.get_run(stream.run_id[:-1] + ("0" if stream.run_id[-1] != "0" else "1"))
    with pytest.raises(RunNotFound):
        hive.get_run("not a run")


def test_a_session_keeps_its_last_finished_runs(workspace: Path) -> None:
    with Hive.start(
        "memory", llm=ScriptedLlm([Reply("ok")]), workspace=workspace, max_finished_runs=2
    ) as hive:
        hive.create_session("s")
        runs = []
        for n in range(4):
            runs.append(hive.start_run("s", f"p{n}", idempotency_key=f"k{n}"))
            hive.wait_run(runs[-1].run_id, timeout=30)
        assert [run.prompt for run in hive.list_runs("s")] == ["p2", "p3"]
        with pytest.raises(RunNotFound):
            hive.get_run(runs[0].run_id)
        # Its key expired with it: the same key starts a new run.
        assert hive.start_run("s", "p0", idempotency_key="k0").run_id != runs[0].run_id


def test_a_replay_past_the_kept_events_says_so_and_still_ends(workspace: Path) -> None:
    long_answer = " ".join(["word"] * (EVENT_RING_SIZE + 200))
    with Hive.start("memory", llm=ScriptedLlm([Reply(long_answer)]), workspace=workspace) as hive:
        hive.create_session("s")
        stream = hive.generate_streaming("s", "talk")
        seen = list(stream)
        assert len(seen) > EVENT_RING_SIZE
        replayed = list(hive.run_events(stream.run_id, after=0))
        assert isinstance(replayed[0], EventsDropped) and replayed[0].count == len(seen) - EVENT_RING_SIZE
        assert [e.event_id for e in replayed[1:]] == [e.event_id for e in seen[-EVENT_RING_SIZE:]]
        assert isinstance(replayed[-1], TurnEnd)


def test_subscribe_after_an_id_replays_the_session_events(hive: Hive) -> None:
    hive.create_session("s")
    first = list(hive.generate_streaming("s", "look"))
    second = list(hive.generate_streaming("s", "look again"))
    with hive.subscribe("s", after=first[-1].event_id) as events:
        replayed = [events.get(timeout=5) for _ in second]
    assert [e.event_id for e in replayed if e is not None] == [e.event_id for e in second]
