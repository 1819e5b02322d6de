"""The asyncio actor backend keeps pykka's semantics on an event loop, and contains failures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pykka
import pytest
from pykka import ActorRegistry

from sessionhive.runtime import AsyncioBackend, HiveActor, complete_threadsafe, loop_future

WAIT = 10.0


@dataclass(frozen=True)
class Record:
    value: Any


@dataclass(frozen=True)
class Ask:
    reply: concurrent.futures.Future[Any]


@dataclass(frozen=True)
class Raise:
    error: BaseException


class DeadLetters(list[Any]):
    """Collects dead letters and says when the first one arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Event()

    def append(self, item: Any) -> None:
        super().append(item)
        self.arrived.set()


class Doom(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt (pytest stays undisturbed)."""


class Recorder(HiveActor):
    def __init__(self, journal: list[Any], dead: list[Any] | None = None) -> None:
        super().__init__()
        self.journal = journal
        self.dead = dead
        journal.append(("init", threading.get_ident()))

    def on_start(self) -> None:
        self.journal.append("start")

    def on_Record(self, message: Record) -> None:
        self.journal.append(message.value)

    def on_Ask(self, message: Ask) -> None:
        message.reply.set_result(list(self.journal))

    def on_Raise(self, message: Raise) -> None:
        raise message.error

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.journal.append(("failure", exception_type))

    def dead_letters(self) -> Callable[[Any], None] | None:
        dead = self.dead
        return None if dead is None else dead.append


@pytest.fixture
def loop_backend() -> Iterator[AsyncioBackend]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()
    backend = AsyncioBackend(loop, throughput=5)
    assert thread.ident is not None
    backend.bind_thread(thread.ident)
    yield backend
    backend.shutdown()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT)
    loop.close()


def ask(ref: pykka.ActorRef[Any]) -> list[Any]:
    reply: concurrent.futures.Future[Any] = concurrent.futures.Future()
    ref.tell(Ask(reply))
    result: list[Any] = reply.result(WAIT)
    return result


def test_on_start_runs_first_and_messages_arrive_in_order(loop_backend: AsyncioBackend) -> None:
    journal: list[Any] = []
    ref = loop_backend.spawn(Recorder, journal)
    for n in range(20):
        ref.tell(Record(n))
    seen = ask(ref)
    assert seen[1] == "start" and seen[2:] == list(range(20))


def test_handlers_run_on_the_loop_thread_and_actors_stay_out_of_the_global_registry(
    loop_backend: AsyncioBackend,
) -> None:
    journal: list[Any] = []
    ref = loop_backend.spawn(Recorder, journal)
    ran_on: list[int] = []
    loop_backend.schedule(lambda: ran_on.append(threading.get_ident()))
    ask(ref)
    assert ran_on == [loop_backend.loop_thread_id]
    assert ActorRegistry.get_by_urn(ref.actor_urn) is None


def test_a_flooded_actor_yields_to_others_after_its_throughput(loop_backend: AsyncioBackend) -> None:
    order: list[str] = []
    flooded = loop_backend.spawn(Recorder, order)
    quiet = loop_backend.spawn(Recorder, order)
    ask(flooded)
    ask(quiet)
    order.clear()

    def burst() -> None:
        for n in range(30):
            flooded.tell(Record(f"f{n}"))
        quiet.tell(Record("q"))

    loop_backend.schedule(burst)
    ask(quiet)
    ask(flooded)
    # throughput=5: the quiet actor's one message waits one run of 5, not all 30.
    assert order.index("q") <= 5


def test_an_exception_of_any_kind_stops_that_actor_only(loop_backend: AsyncioBackend) -> None:
    journal: list[Any] = []
    bystander_journal: list[Any] = []
    doomed = loop_backend.spawn(Recorder, journal)
    bystander = loop_backend.spawn(Recorder, bystander_journal)
    ask(doomed)
    for error in (SystemExit(3), Doom()):
        victim_journal: list[Any] = []
        victim = loop_backend.spawn(Recorder, victim_journal)
        ask(victim)
        victim.tell(Raise(error))
        bystander.tell(Record("still here"))
        assert "still here" in ask(bystander)
        assert not victim.is_alive()
        assert victim_journal[-1] == ("failure", type(error))
    assert doomed.is_alive() and bystander.is_alive()


def test_a_tell_that_reaches_a_stopped_actor_goes_to_its_dead_letters(loop_backend: AsyncioBackend) -> None:
    journal: list[Any] = []
    dead = DeadLetters()
    ref = loop_backend.spawn(Recorder, journal, dead)
    ask(ref)

    def stop_then_tell() -> None:
        # Both in the mailbox before the actor runs again: the stop comes first.
        ref.tell(pykka.messages._ActorStop())
        ref.tell(Record("too late"))

    loop_backend.schedule(stop_then_tell)
    assert dead.arrived.wait(WAIT)
    assert dead == [Record("too late")]
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(Record("after"))


def test_actors_spawned_from_another_thread_start_on_the_loop(loop_backend: AsyncioBackend) -> None:
    journal: list[Any] = []
    refs = []
    spawned = threading.Thread(target=lambda: refs.append(loop_backend.spawn(Recorder, journal)))
    spawned.start()
    spawned.join(WAIT)
    seen = ask(refs[0])
    assert seen[0][0] == "init" and seen[1] == "start"


def test_a_shut_down_backend_spawns_nothing(loop_backend: AsyncioBackend) -> None:
    loop_backend.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        loop_backend.spawn(Recorder, [])


def test_mail_from_many_threads_at_once_all_arrives_in_each_senders_order(
    loop_backend: AsyncioBackend,
) -> None:
    # Off the loop, mailboxes to run are handed over in batches (one loop wake-up each):
    # a mailbox scheduled while a batch drains must still run.
    journals: list[list[Any]] = [[] for _ in range(20)]
    refs = [loop_backend.spawn(Recorder, journal) for journal in journals]
    senders = 4

    def send(sender: int) -> None:
        for n in range(200):
            for ref in refs:
                ref.tell(Record((sender, n)))

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    for ref, journal in zip(refs, journals, strict=True):
        seen = [value for value in ask(ref) if isinstance(value, tuple) and isinstance(value[0], int)]
        assert len(seen) == senders * 200, journal[:3]
        for sender in range(senders):
            assert [n for s, n in seen if s == sender] == list(range(200))


def test_answers_from_other_threads_reach_every_awaiting_call_and_a_closed_loop_is_no_error() -> None:
    async def await_all() -> list[int]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(1000)]

        def answer(start: int) -> None:
            for n in range(start, len(futures), 4):
                complete_threadsafe(futures[n], n) if n % 7 else complete_threadsafe(
                    futures[n], None, KeyError(n)
                )

        threads = [threading.Thread(target=answer, args=(start,)) for start in range(4)]
        for thread in threads:
            thread.start()
        results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT)
        for thread in threads:
            thread.join(WAIT)
        return [n if isinstance(n, int) else -1 for n in results]

    assert asyncio.run(await_all()) == [n if n % 7 else -1 for n in range(1000)]
    closed = asyncio.new_event_loop()
    late: asyncio.Future[Any] = closed.create_future()
    closed.close()
    complete_threadsafe(late, 1)  # its loop is gone: nobody awaits it, and the caller is not failed
    assert not late.done()


def test_a_loop_future_takes_the_outcome_set_on_another_thread() -> None:
    async def outcomes() -> tuple[Any, BaseException | None, bool]:
        loop = asyncio.get_running_loop()
        answered: concurrent.futures.Future[int] = concurrent.futures.Future()
        failed: concurrent.futures.Future[int] = concurrent.futures.Future()
        abandoned: concurrent.futures.Future[int] = concurrent.futures.Future()
        waiters = [loop_future(source, loop) for source in (answered, failed, abandoned)]
        waiters[2].cancel()  # the awaiting side gave up: the source is still its owner's to settle

        def settle() -> None:
            answered.set_result(7)
            failed.set_exception(KeyError("gone"))
            abandoned.set_result(1)

        settler = threading.Thread(target=settle)
        settler.start()
        settler.join(WAIT)
        value = await asyncio.wait_for(waiters[0], WAIT)
        error: BaseException | None = None
        try:
            await asyncio.wait_for(waiters[1], WAIT)
        except KeyError as exc:
            error = exc
        return value, error, abandoned.result() == 1

    value, error, abandoned_settled = asyncio.run(outcomes())
    assert value == 7 and isinstance(error, KeyError) and abandoned_settled
