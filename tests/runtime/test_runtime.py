"""The runtime's promises (issue 10): read-your-writes on the published views, direct routing that
never loses a call to a passivating session, bounded mailboxes, and one thread at a time per session.

Every test runs on each actor backend (the ``actor_backend`` fixture).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionhive import (
    AsyncHive,
    ConfirmationPolicy,
    ConfirmationRequired,
    Hive,
    LlmConfig,
    Overloaded,
    Reply,
    ScriptedLlm,
    SessionConfig,
    SessionNotFound,
    ToolCall,
)
from sessionhive.actors import session as session_module
from sessionhive.actors.messages import Passivate, Pause
from sessionhive.llm import LlmRequest, LlmResponse
from tests.conftest import tool_loop_script

WAIT = 20.0


@pytest.fixture
def stored_hive(workspace: Path, tmp_path: Path, actor_backend: str) -> Iterator[Hive]:
    with Hive.start(
        store=f"sqlite:///{tmp_path / 'hive.db'}",
        llm=ScriptedLlm(tool_loop_script),
        workspace=workspace,
        actor_backend=actor_backend,
    ) as hive:
        yield hive


def test_every_read_view_shows_the_call_that_just_returned(stored_hive: Hive) -> None:
    hive = stored_hive
    hive.create_session("s")
    assert hive.history("s") == [] and hive.usage("s").total_tokens == 0

    result = hive.generate("s", "look")
    history = hive.history("s")
    assert history[-len(result.messages) :] == result.messages  # the turn is in the history at once
    assert hive.usage("s") == result.usage
    assert hive.context_usage("s").used_tokens > 0

    policy = ConfirmationPolicy(require_confirmation=("bash",), timeout_s=12)
    hive.set_confirmation_policy("s", policy)
    assert hive.get_confirmation_policy("s") == policy

    hive.configure("s", model_config=LlmConfig("scripted", "other-model"))
    config = hive.get_llm_for_session("s")
    assert config is not None and config.model == "other-model"

    hive.create_child_session("s", "s/child")
    assert hive.get_child_sessions("s") == ["s/child"]
    assert hive.is_child_session("s/child") and not hive.is_child_session("s")

    hive.clear("s")
    assert hive.history("s") == []

    hive.destroy_session("s")
    with pytest.raises(SessionNotFound):
        hive.history("s")
    with pytest.raises(SessionNotFound):
        hive.history("s/child")
    assert hive.get_child_sessions("s") == []


def test_pending_confirmations_are_visible_when_the_request_is(workspace: Path, actor_backend: str) -> None:
    script = [Reply("writing", [ToolCall("write_file", {"path": "f.txt", "content": "x"})]), Reply("ok")]
    with Hive.start(
        store="memory", llm=ScriptedLlm(script), workspace=workspace, actor_backend=actor_backend
    ) as hive:
        hive.create_session("w")
        stream = hive.generate_streaming("w", "write")
        for event in stream:
            if isinstance(event, ConfirmationRequired):
                # The event is emitted after the view that lists it was published.
                assert hive.pending_confirmations("w") == [event.tool_id]
                hive.confirm_tool("w", event.tool_id, approved=False)
                assert hive.pending_confirmations("w") == []
        assert stream.result().text == "ok"


def _live_entry(hive: Hive, session_id: str) -> Any:
    # A new session answers its creator from its constructor, before the
    # supervisor has stored its ref; a call the supervisor answers comes
    # after that spawn returned (its mailbox is in order).
    hive.list_sessions()
    entry = hive._core.directory.live.get(session_id)
    assert entry is not None and entry.ref is not None
    return entry


def test_a_call_that_reaches_a_passivating_session_is_answered_by_its_next_incarnation(
    stored_hive: Hive,
) -> None:
    hive = stored_hive
    hive.create_session("p")
    hive.generate("p", "look")
    hive.flush()
    before = hive.history("p")
    entry = _live_entry(hive, "p")
    # Both messages land in the old actor's mailbox, in this order: it
    # passivates, then must hand the pause to its next incarnation.
    passivated: Any = concurrent.futures.Future()
    paused: Any = concurrent.futures.Future()

    def tell_both() -> None:
        # From one thread, back to back (on the asyncio backend: from the
        # loop itself, so the actor cannot stop between the two).
        entry.ref.tell(Passivate(passivated))
        entry.ref.tell(Pause(paused))

    hive._core.turns.call_soon(tell_both)
    assert passivated.result(WAIT) is True
    assert paused.result(WAIT) is True  # answered, not lost with the old actor
    assert hive.history("p") == before
    assert hive.pause_session("p") is False  # the new incarnation is the paused one
    assert _live_entry(hive, "p").ref is not entry.ref


def test_a_stale_directory_entry_reaches_the_supervisor(stored_hive: Hive) -> None:
    hive = stored_hive
    hive.create_session("q")
    hive.flush()
    entry = _live_entry(hive, "q")
    passivated: Any = concurrent.futures.Future()
    entry.ref.tell(Passivate(passivated))
    assert passivated.result(WAIT) is True
    # A caller that looked the actor up before it stopped sends to it now.
    late: Any = concurrent.futures.Future()
    try:
        entry.ref.tell(Pause(late))
    except Exception:
        hive.pause_session("q")
    else:
        assert late.result(WAIT) is True  # a dead letter, delivered to the next incarnation
    assert hive.resume_session("q") is True


def test_a_full_session_refuses_calls_with_overloaded_and_loses_nothing_it_accepted(
    workspace: Path, actor_backend: str
) -> None:
    gate = threading.Event()

    class GatedLlm:
        """A model that answers once the test opens the gate (waiting off the event loop)."""

        provider = "scripted"
        model = "gated"

        async def complete(self, request: LlmRequest) -> LlmResponse:
            await asyncio.to_thread(gate.wait, WAIT)
            return LlmResponse("done")

        async def stream(self, request: LlmRequest, on_text: Any) -> LlmResponse:
            return await self.complete(request)

    with Hive.start(
        store="memory", llm=GatedLlm(), workspace=workspace, actor_backend=actor_backend, mailbox_size=3
    ) as hive:
        hive.create_session("busy")
        # One turn runs (blocked in the model's thread), three wait: the queue is full.
        streams = []
        accepted = 0
        refused = 0
        for n in range(6):
            try:
                streams.append(hive.generate_streaming("busy", f"turn {n}"))
                accepted += 1
            except Overloaded as error:
                assert error.session_id == "busy" and error.limit == 3
                assert "retry later" in str(error)
                refused += 1
        assert accepted == 4 and refused == 2
        gate.set()
        assert [stream.result(WAIT).text for stream in streams] == ["done"] * 4
        prompts = [m.text for m in hive.history("busy") if m.role == "user"]
        assert prompts == [f"turn {n}" for n in range(4)]
        rejected = hive.metrics.registry.get_sample_value(
            "sessionhive_calls_rejected_total", {"queue": "jobs"}
        )
        assert rejected == 2


def test_no_session_ever_handles_two_messages_at_once(
    workspace: Path, actor_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside: dict[str, int] = defaultdict(int)
    overlaps: list[str] = []
    threads_seen: dict[str, set[int]] = defaultdict(set)
    original = session_module.SessionActor.on_receive

    def watched(self: Any, message: Any) -> Any:
        session_id = self.session_id
        inside[session_id] += 1  # only ever 1 if handlers of one session never overlap
        if inside[session_id] != 1:
            overlaps.append(session_id)
        threads_seen[session_id].add(threading.get_ident())
        try:
            return original(self, message)
        finally:
            inside[session_id] -= 1

    monkeypatch.setattr(session_module.SessionActor, "on_receive", watched)
    with Hive.start(
        store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace, actor_backend=actor_backend
    ) as hive:
        ids = [f"t{n}" for n in range(8)]
        for session_id in ids:
            hive.create_session(
                session_id, SessionConfig(confirmation_policy=ConfirmationPolicy(enabled=False))
            )

        def hammer(worker: int) -> None:
            for n in range(15):
                session_id = ids[(worker + n) % len(ids)]
                hive.configure(session_id, thinking=bool(n % 2))
                hive.set_confirmation_policy(session_id, ConfirmationPolicy(enabled=False, timeout_s=1 + n))
                hive.generate(session_id, f"w{worker} n{n}", timeout=WAIT)

        workers = [threading.Thread(target=hammer, args=(w,)) for w in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT * 3)
        assert not any(worker.is_alive() for worker in workers)
        assert overlaps == []
        assert sum(len([m for m in hive.history(s) if m.role == "user"]) for s in ids) == 6 * 15
    if actor_backend == "asyncio":
        # One event loop thread runs every session's handlers.
        assert len(set().union(*threads_seen.values())) == 1


def test_an_async_hive_runs_its_actors_on_the_running_loop(workspace: Path) -> None:
    async def main() -> None:
        async with AsyncHive.start(
            store="memory", llm=ScriptedLlm(tool_loop_script), workspace=workspace, actor_backend="asyncio"
        ) as hive:
            loop_thread = threading.get_ident()
            seen: list[int] = []
            original = session_module.SessionActor.on_receive

            def watched(self: Any, message: Any) -> Any:
                seen.append(threading.get_ident())
                return original(self, message)

            session_module.SessionActor.on_receive = watched  # type: ignore[method-assign]
            try:
                await hive.create_session("a")
                await hive.generate("a", "look")
                await hive.pause_session("a")
            finally:
                session_module.SessionActor.on_receive = original  # type: ignore[method-assign]
            assert seen and set(seen) == {loop_thread}
            # A sync Hive on the same actors never blocks the loop it runs on: a
            # call an idle actor answers at once works; one that would wait refuses.
            assert hive.sync.resume_session("a") is True
            with pytest.raises(RuntimeError, match="await the AsyncHive"):
                hive.sync.generate("a", "look")
            assert hive.sync.history("a") == await hive.history("a")  # views are readable from anywhere

    asyncio.run(main())


def test_a_session_another_hive_created_on_the_same_store_is_reachable(
    workspace: Path, tmp_path: Path, actor_backend: str
) -> None:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    llm = ScriptedLlm(tool_loop_script)
    with (
        Hive.start(store=store, llm=llm, workspace=workspace, actor_backend=actor_backend) as first,
        Hive.start(
            store=store, llm=llm, workspace=workspace, actor_backend=actor_backend, shared_store=True
        ) as second,
    ):
        first.create_session("made-by-first")
        first.generate("made-by-first", "look")
        first.flush()
        # The second Hive read the store's index before the session existed.
        assert second.history("made-by-first") == first.history("made-by-first")
        with pytest.raises(SessionNotFound):
            second.history("made-by-nobody")
