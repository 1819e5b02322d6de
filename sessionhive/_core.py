"""``HiveCore``: everything the two facades share — validation, routing, replies, reads, stop.

Start-up (``Hive.start``'s arguments, opening the store) is :mod:`sessionhive._startup`.

``Hive`` and ``AsyncHive`` only adapt *waiting* (a thread blocks on a
:class:`concurrent.futures.Future`; a coroutine awaits). Everything else is
written once here, as httpx writes its client once behind ``Client`` and
``AsyncClient``:

* **Routing.** A call for a live session goes straight to its mailbox,
  found in the supervisor's published directory; only a session that is not
  live (resting in the store, activating, passivating) is routed through the
  supervisor, which activates it. A stale directory entry is harmless: the
  session hands a call it can no longer take back to the supervisor.
* **Reads.** ``history``, ``usage``, ``context_usage``, ``pending_confirmations``,
  ``get_confirmation_policy``, ``get_llm_for_session``, ``get_child_sessions``
  and ``is_child_session`` read published immutable views: no message, no
  thread hop, and never behind a queued turn.
* **Replies.** A call from a coroutine on the loop that runs the actors
  gets an :class:`asyncio.Future` (completed without a system call); any
  other caller a :class:`concurrent.futures.Future`.
* **Backpressure.** A session's mailbox is bounded (``mailbox_size``): a
  call that finds it full is refused with :class:`~sessionhive.Overloaded`
  before anything of it is accepted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import pykka

from sessionhive._channels import EventSink
from sessionhive._startup import HiveOptions, Prepared
from sessionhive.actors.directory import Directory, SessionView
from sessionhive.actors.messages import (
    Activate,
    Cancel,
    CancelRun,
    Clear,
    Compact,
    Configure,
    Confirm,
    Create,
    DestroyTree,
    Generate,
    GetRun,
    ListRuns,
    ListSessions,
    LoadAll,
    MaybeAutoCompact,
    Pause,
    ResetSession,
    Resume,
    Route,
    RunEvents,
    SessionCall,
    SetPolicy,
    ShutdownAll,
    StartRun,
    Subscribe,
    Unsubscribe,
    WaitRun,
)
from sessionhive.actors.services import HiveServices, PersistenceLink
from sessionhive.actors.supervisor import SupervisorActor
from sessionhive.actors.turn import TurnLoop
from sessionhive.agent.spending import BudgetBook
from sessionhive.api import (
    Timeout,
    resolve_timeout,
)
from sessionhive.metrics import tracing
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.confirmation import ConfirmationAnswer, OnConfirmation, read_confirmation_answer
from sessionhive.model.content import Prompt
from sessionhive.model.errors import (
    CallTimeout,
    HiveStopped,
    InvalidConfig,
    Overloaded,
    SessionFailed,
    SessionNotFound,
)
from sessionhive.model.events import AgentEvent, ConfirmationRequired
from sessionhive.model.ids import check_id
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import AgentResult
from sessionhive.model.output import OutputSchema, output_spec
from sessionhive.model.runs import (
    OnBusy,
    Run,
    RunNotFound,
    Webhook,
    check_idempotency_key,
    check_on_busy,
    session_of_run,
)
from sessionhive.model.validate import (
    check_confirm_arguments,
    check_instance,
    check_prompt,
)
from sessionhive.persistence.messages import Flush, Health
from sessionhive.runtime import ActorBackend, AsyncioBackend, PooledBackend, Reply, ThreadBackend

if TYPE_CHECKING:
    pass

__all__ = [
    "CLIENT_CLOSE_TIMEOUT",
    "ConfirmationAnswer",
    "HiveCore",
    "OnConfirmation",
    "Pending",
]

log = logging.getLogger("sessionhive")

#: Seconds ``Hive.stop()`` gives the LLM clients to close their connections (best effort).
CLIENT_CLOSE_TIMEOUT = 10.0

_DEFAULT_CONFIG = SessionConfig()  # immutable: one instance serves every session created without a config

T = TypeVar("T")
P = ParamSpec("P")


class Pending(Generic[T]):
    """A call on its way: the reply a facade waits for (its value a ``T``), and the call's name.

    The name is formatted only when the wait times out, so a call pays nothing for it.
    """

    __slots__ = ("op", "reply", "session_id")

    def __init__(self, reply: Reply, op: str, session_id: str | None = None) -> None:
        self.reply = reply
        self.op = op
        self.session_id = session_id

    def what(self) -> str:
        """The call as an error names it: ``clear() on session 'a'``."""
        return self.op if self.session_id is None else f"{self.op} on session {self.session_id!r}"

    def timed_out(self, timeout: float | None) -> CallTimeout:
        return CallTimeout(f"{self.what()} got no answer within {timeout} s (the work may still finish)")


class HiveCore:
    """One running Hive: its actors, loop and services (see the module docstring)."""

    def __init__(self, prepared: Prepared, loop: asyncio.AbstractEventLoop | None) -> None:
        """Launch the actors: on ``loop`` (running in this thread), or on a loop thread of their own."""
        options = prepared.options
        self.options = options
        self.call_timeout = options.call_timeout
        self.metrics = prepared.metrics
        self.tools = prepared.tools
        self._persistence_ref = prepared.persistence
        self.turns = TurnLoop(options.max_concurrent_turns, loop)
        self.backend = self._make_backend(prepared.backend_name, options.actor_backend)
        self._loop_backend = self.backend if isinstance(self.backend, AsyncioBackend) else None
        self.persistence = PersistenceLink(
            prepared.persistence, self._loop_backend, prepared.backlog, durable_store=prepared.durable_store
        )
        self.directory = Directory()
        prepared.directory = self.directory
        self.services = HiveServices(
            persistence=self.persistence,
            turn_loop=self.turns,
            tools=self.tools,
            workspace=prepared.workspace,
            metrics=self.metrics,
            default_llm=prepared.default_llm,
            default_llm_config=prepared.default_llm_config,
            llm_clients=prepared.llm_clients,
            directory=self.directory,
            subscriber_queue_size=options.subscriber_queue_size,
            mailbox_size=options.mailbox_size,
            restart_limit=options.restart_limit,
            restart_window=options.restart_window,
            persistence_backlog=prepared.backlog,
            trace_content=options.trace_content,
            budgets=BudgetBook(options.budget),
            max_finished_runs=options.max_finished_runs,
            webhooks=prepared.webhooks,
        )
        self.webhooks = prepared.webhooks
        singletons = (
            self.backend
            if self._loop_backend is not None or not isinstance(options.actor_backend, str | None)
            else None
        )
        supervisor_backend = singletons or ThreadBackend()
        self.supervisor = supervisor_backend.spawn(
            SupervisorActor,
            self.services,
            self.backend,
            prepared.stored,
            idle_timeout=options.idle_timeout,
            max_live_sessions=options.max_live_sessions,
        )
        self.exporter: Any = None
        if prepared.metrics_config.port is not None:
            from sessionhive.metrics.exporter import MetricsServer

            config = prepared.metrics_config
            assert config.port is not None
            self.exporter = MetricsServer(self.metrics.registry, config.addr, config.port)
        self.stopped = False

    def _make_backend(self, name: str, choice: str | ActorBackend | None) -> ActorBackend:
        if choice is not None and not isinstance(choice, str):
            return choice
        if name == "asyncio":
            backend = AsyncioBackend(self.turns.loop)
            assert self.turns.thread_id is not None
            backend.bind_thread(self.turns.thread_id)
            return backend
        if name == "pooled":
            return PooledBackend()
        return ThreadBackend()

    # ------------------------------------------------------------------ replies

    def on_loop(self) -> bool:
        return self.turns.on_loop()

    def new_reply(self, here: bool) -> Reply:
        """An asyncio future for a coroutine on the actors' own loop (``here``), else a thread-safe one."""
        if here and self._loop_backend is not None and self.turns.on_loop():
            return self.turns.loop.create_future()
        return concurrent.futures.Future()

    def timeout(self, timeout: Timeout) -> float | None:
        return resolve_timeout(timeout, self.call_timeout)

    @staticmethod
    def turn_not_accepted(session_id: str) -> CallTimeout:
        """What ``generate_streaming`` raises when the session did not take the turn within its timeout."""
        return CallTimeout(f"session {session_id!r} did not accept the turn in time")

    def subscriber_queue(self, session_id: str) -> tuple[int, Callable[[int], None], str]:
        """A subscription channel's bound, drop counter and session: ``maxsize, on_drop, session_id``."""
        return self.options.subscriber_queue_size, self.metrics.events_dropped.inc, session_id

    # ------------------------------------------------------------------ routing

    def _tell(self, ref: pykka.ActorRef[Any], message: Any) -> None:
        """Tell an actor; on the actors' own loop an idle actor handles it at once, in this frame."""
        if self._loop_backend is not None:
            self._loop_backend.tell_inline(ref, message)
        else:
            ref.tell(message)

    def _tell_supervisor(self, message: Any) -> None:
        if self.stopped:
            raise HiveStopped()
        try:
            self._tell(self.supervisor, message)
        except pykka.ActorDeadError:
            raise HiveStopped() from None

    def send(self, session_id: str, call: SessionCall) -> None:
        """Deliver ``call``: straight to a live session's mailbox, else through the supervisor."""
        if self.stopped:
            raise HiveStopped()
        entry = self.directory.live.get(session_id)
        if entry is not None and entry.ref is not None:
            inbox: Any = entry.ref.actor_inbox
            if inbox.qsize() >= self.options.mailbox_size:
                self.metrics.child(self.metrics.calls_rejected, "mailbox").inc()
                raise Overloaded(session_id, self.options.mailbox_size)
            try:
                self._tell(entry.ref, call)
                return
            except pykka.ActorDeadError:
                pass  # stopped since we looked: the supervisor knows what became of it
        failed = self.directory.failed.get(session_id)
        if failed is not None:
            raise SessionFailed(session_id, failed)
        self._tell_supervisor(Route(session_id, call))

    def call(
        self, session_id: str, make: Callable[[Reply], SessionCall], op: str, here: bool
    ) -> Pending[Any]:
        """Send a session the message ``make(reply)``; ``op`` names the call in a CallTimeout."""
        check_id(session_id)
        reply = self.new_reply(here)
        self.send(session_id, make(reply))
        return Pending(reply, op, session_id)

    def unsubscribe(self, session_id: str, sink: EventSink) -> None:
        """Detach a closed subscription; nothing to do when the session or the Hive is gone."""
        try:
            self.send(session_id, Unsubscribe(None, sink))
        except Exception:  # noqa: BLE001 - the session or the Hive is gone: nothing left to detach
            pass

    # ------------------------------------------------------------------ reads

    def running(self) -> None:
        """Raise HiveStopped once the Hive stopped: reads refuse like calls do."""
        if self.stopped:
            raise HiveStopped()

    def view_or_activation(self, session_id: str, here: bool) -> SessionView | Pending[None]:
        """The session's published view if it is live; else the activation to wait for, then ask again."""
        check_id(session_id)
        self.running()
        entry = self.directory.live.get(session_id)
        if entry is not None and entry.view is not None:
            return entry.view
        return self.activate(session_id, here, "activating it for a read")

    @staticmethod
    def kept_passivating(session_id: str) -> CallTimeout:
        """What a read raises when the session went to rest again after each of its activations."""
        return CallTimeout(f"session {session_id!r} kept being passivated while it was read")

    def check_known(self, session_id: str) -> None:
        check_id(session_id)
        self.running()
        if session_id not in self.directory.known and session_id not in self.directory.live:
            raise SessionNotFound(session_id)

    def children(self, parent_id: str) -> list[str]:
        check_id(parent_id, "parent session id")
        self.running()
        return sorted(self.directory.children.get(parent_id, ()))

    def known_count(self) -> int:
        self.running()
        return len(self.directory.known)

    def live_count(self) -> int:
        self.running()
        return len(self.directory.live)

    def is_child(self, session_id: str) -> bool:
        self.check_known(session_id)
        return session_id in self.directory.parents

    # ------------------------------------------------------------------ supervisor calls

    def _supervised(
        self, make: Callable[[Reply], Any], op: str, session_id: str | None, here: bool
    ) -> Pending[Any]:
        reply = self.new_reply(here)
        self._tell_supervisor(make(reply))
        return Pending(reply, op, session_id)

    def create(
        self, session_id: str, config: SessionConfig | None, parent_id: str | None, exist_ok: bool, here: bool
    ) -> Pending[str]:
        check_id(session_id)
        if parent_id is not None:
            check_id(parent_id, "parent session id")
        check_instance("config", config, SessionConfig, optional=True)
        config = _DEFAULT_CONFIG if config is None else config
        op = "create_session()" if parent_id is None else "create_child_session()"
        return self._supervised(
            lambda r: Create(session_id, config, parent_id, r, exist_ok), op, session_id, here
        )

    def destroy(self, session_id: str, here: bool) -> Pending[None]:
        check_id(session_id)
        return self._supervised(lambda r: DestroyTree(session_id, r), "destroy_session()", session_id, here)

    def reset(self, session_id: str, here: bool) -> Pending[bool]:
        check_id(session_id)
        return self._supervised(lambda r: ResetSession(session_id, r), "reset_session()", session_id, here)

    def list_sessions(self, here: bool) -> Pending[list[str]]:
        return self._supervised(ListSessions, "list_sessions()", None, here)

    def load_all(self, here: bool) -> Pending[int]:
        return self._supervised(LoadAll, "load_all_sessions()", None, here)

    # ------------------------------------------------------------------ session calls

    def activate(self, session_id: str, here: bool, op: str = "restore_session_by_id()") -> Pending[None]:
        return self.call(session_id, Activate, op, here)

    def generate(
        self,
        session_id: str,
        prompt: Prompt,
        sink: EventSink | None,
        on_confirmation: OnConfirmation | None,
        here: bool,
        idempotency_key: str | None = None,
        on_busy: OnBusy = "enqueue",
        output_schema: OutputSchema | None = None,
    ) -> tuple[Pending[AgentResult], Reply]:
        """The turn's result, and the reply completed with its :class:`Run` once the session accepted it."""
        text, parts = check_prompt(prompt)
        output = output_spec(output_schema)
        key, on_busy = check_idempotency_key(idempotency_key), check_on_busy(on_busy)
        if on_confirmation is not None:
            if not callable(on_confirmation):
                raise InvalidConfig("on_confirmation must be a callable taking a ConfirmationRequired")
            sink = _ConfirmationAnswerer(self, on_confirmation, sink)
        accepted = self.new_reply(here)
        parent = tracing.current_context()  # here, in the caller's thread: the turn's span is its child
        result = self.call(
            session_id,
            lambda r: Generate(r, text, sink, accepted, parent, key, on_busy, output, parts),
            "generate()",
            here,
        )
        return result, accepted

    def start_run(
        self,
        session_id: str,
        prompt: Prompt,
        idempotency_key: str | None,
        on_busy: OnBusy,
        webhook: Webhook | None,
        here: bool,
        output_schema: OutputSchema | None = None,
    ) -> Pending[Run]:
        text, parts = check_prompt(prompt)
        output = output_spec(output_schema)
        check_instance("webhook", webhook, Webhook, optional=True)
        key, on_busy = check_idempotency_key(idempotency_key), check_on_busy(on_busy)
        parent = tracing.current_context()
        return self.call(
            session_id,
            lambda r: StartRun(r, text, key, on_busy, webhook, parent, output, parts),
            "start_run()",
            here,
        )

    def _run_call(
        self, run_id: str, make: Callable[[Reply], SessionCall], op: str, here: bool
    ) -> Pending[Any]:
        """Send the run's session ``make(reply)``: RunNotFound for an id naming no session of this Hive."""
        session_id = session_of_run(run_id)
        try:
            self.check_known(session_id)
        except (SessionNotFound, InvalidConfig):
            raise RunNotFound(run_id) from None
        return self.call(session_id, make, op, here)

    def get_run(self, run_id: str, here: bool) -> Pending[Run]:
        return self._run_call(run_id, lambda r: GetRun(r, run_id), "get_run()", here)

    def wait_run(self, run_id: str, here: bool) -> Pending[Run]:
        return self._run_call(run_id, lambda r: WaitRun(r, run_id), "wait_run()", here)

    def cancel_run(self, run_id: str, here: bool) -> Pending[bool]:
        return self._run_call(run_id, lambda r: CancelRun(r, run_id), "cancel_run()", here)

    def list_runs(self, session_id: str, here: bool) -> Pending[list[Run]]:
        return self.call(session_id, ListRuns, "list_runs()", here)

    def run_events(self, run_id: str, after: int | None, sink: EventSink, here: bool) -> Pending[None]:
        """Replay the run's events after ``after`` into ``sink``, then stream its live ones until it ends."""
        if after is not None:
            check_instance("after", after, int)
        return self._run_call(run_id, lambda r: RunEvents(r, run_id, after, sink), "run_events()", here)

    def clear(self, session_id: str, here: bool) -> Pending[None]:
        return self.call(session_id, Clear, "clear()", here)

    def compact(self, session_id: str, here: bool) -> Pending[None]:
        return self.call(session_id, Compact, "compact()", here)

    def maybe_auto_compact(self, session_id: str, here: bool) -> Pending[bool]:
        return self.call(session_id, MaybeAutoCompact, "maybe_auto_compact()", here)

    def configure(
        self,
        session_id: str,
        thinking: bool | None,
        budget: int | None,
        model_config: LlmConfig | None,
        here: bool,
    ) -> Pending[None]:
        return self.call(
            session_id, lambda r: Configure(r, thinking, budget, model_config), "configure()", here
        )

    def pause(self, session_id: str, here: bool) -> Pending[bool]:
        return self.call(session_id, Pause, "pause_session()", here)

    def resume(self, session_id: str, here: bool) -> Pending[bool]:
        return self.call(session_id, Resume, "resume_session()", here)

    def cancel(self, session_id: str, reason: str | None, here: bool) -> Pending[bool]:
        check_instance("reason", reason, str, optional=True)
        make = Cancel if reason is None else (lambda r: Cancel(r, reason))
        return self.call(session_id, make, "cancel_operation()", here)

    def confirm(
        self,
        session_id: str,
        tool_id: str,
        approved: bool,
        reason: str | None,
        decided_by: str | None,
        here: bool,
    ) -> Pending[bool]:
        check_confirm_arguments(tool_id, approved, reason, decided_by)
        return self.call(
            session_id, lambda r: Confirm(r, tool_id, approved, reason, decided_by), "confirm_tool()", here
        )

    def set_policy(
        self, session_id: str, policy: ConfirmationPolicy, here: bool
    ) -> Pending[ConfirmationPolicy]:
        check_instance("policy", policy, ConfirmationPolicy)
        return self.call(session_id, lambda r: SetPolicy(r, policy), "set_confirmation_policy()", here)

    def subscribe(
        self, session_id: str, sink: EventSink, here: bool, after: int | None = None
    ) -> Pending[None]:
        if after is not None:
            check_instance("after", after, int)
        return self.call(session_id, lambda r: Subscribe(r, sink, after), "subscribe()", here)

    # ------------------------------------------------------------------ persistence

    def _to_persistence(self, message: Any) -> None:
        """Through the link, on the loop, so it follows every snapshot sent before it."""
        if self._loop_backend is not None:
            self._loop_backend.schedule(lambda: self.persistence.send(message))
        else:
            self.persistence.send(message)

    def _persistence_call(
        self, make: Callable[[concurrent.futures.Future[Any]], Any], op: str
    ) -> Pending[Any]:
        # Always a thread-safe future: the persistence actor answers from its own thread.
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if not self._persistence_ref.is_alive():
            raise HiveStopped()
        self._to_persistence(make(future))
        return Pending(future, op)

    def flush(self) -> Pending[None]:
        return self._persistence_call(Flush, "flush()")

    def health(self) -> Pending[list[tuple[str, str]]]:
        return self._persistence_call(Health, "store_health()")

    # ------------------------------------------------------------------ stop

    def shutdown_sessions(self) -> Pending[None]:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.supervisor.tell(ShutdownAll(done))
        return Pending(done, "stopping the sessions")

    def stop_persistence(self, timeout: float | None) -> None:
        """Blocking: the last flush and the persistence actor's stop (run it off the loop)."""
        self.webhooks.stop(timeout)  # before the store closes under it
        try:
            self._persistence_ref.stop(block=True, timeout=timeout)
        except (pykka.Timeout, pykka.ActorDeadError):
            log.warning("sessionhive: the persistence actor did not stop in time")

    def release(self) -> None:
        """The last, non-blocking step of stopping: tools, exporter, metrics, backend."""
        hub = getattr(self.tools, "mcp", None)
        if hub is not None:
            hub.close_soon()
        close = getattr(self.tools, "close", None)
        if callable(close):
            close()
        if self.exporter is not None:
            self.exporter.close()
        if self.metrics.joined:
            self.metrics.unregister()  # a later Hive may join the same registry
        self.backend.shutdown()


def launch(options: HiveOptions) -> HiveCore:
    """Start a Hive's core from a thread: the actors run on a loop thread of their own."""
    return HiveCore(Prepared(options), None)


async def launch_async(options: HiveOptions) -> HiveCore:
    """Start a Hive's core from a coroutine, never blocking the loop (files and the store off it).

    With the asyncio backend the actors run on the running loop itself.
    """
    prepared = await asyncio.to_thread(Prepared, options)
    if prepared.backend_name == "asyncio":
        return HiveCore(prepared, asyncio.get_running_loop())
    return await asyncio.to_thread(HiveCore, prepared, None)


class _ConfirmationAnswerer:
    """An event sink that answers a turn's confirmation requests with the caller's callback.

    The callback runs off the actors' loop (a plain function in a thread of
    its own: it may ask a human; a coroutine function on the loop). What it
    returns is read on the loop by
    :func:`~sessionhive.model.confirmation.read_confirmation_answer`: an
    awaitable answer (a plain function may return one too) is awaited for the
    confirmation's timeout, and only ``bool`` or ``(bool, reason)`` counts.
    The decision goes back as an ordinary ``confirm_tool``. A callback that
    raises rejects the call, with the exception as the reason.
    """

    def __init__(self, core: HiveCore, callback: OnConfirmation, inner: EventSink | None) -> None:
        self._core = core
        self._callback = callback
        self._inner = inner
        self._answering: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    def offer(self, event: AgentEvent) -> None:
        if self._inner is not None:
            self._inner.offer(event)
        if isinstance(event, ConfirmationRequired):
            if inspect.iscoroutinefunction(self._callback):
                self._core.turns.call_soon(self._start_async, event, None)
            else:
                threading.Thread(
                    target=self._ask_blocking, args=(event,), name="sessionhive-confirm", daemon=True
                ).start()

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()

    def _ask_blocking(self, event: ConfirmationRequired) -> None:
        try:
            answer: object = self._callback(event)
        except BaseException as error:  # noqa: BLE001 - a failing callback rejects, it never escapes
            answer = (False, f"on_confirmation raised {type(error).__name__}: {error}")
        try:
            self._core.turns.call_soon(self._start_async, event, (answer,))
        except RuntimeError:  # the loop closed: the Hive stopped, nothing waits for this answer
            if inspect.iscoroutine(answer):
                answer.close()

    def _start_async(self, event: ConfirmationRequired, answered: tuple[object] | None) -> None:
        task = self._core.turns.loop.create_task(self._answer(event, answered))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, event: ConfirmationRequired, answered: tuple[object] | None) -> None:
        """Read the callback's answer (calling it here if ``answered`` is None) and confirm by it."""
        try:
            answer = self._callback(event) if answered is None else answered[0]
        except Exception as error:  # noqa: BLE001 - a failing callback rejects, it never escapes
            answer = (False, f"on_confirmation raised {type(error).__name__}: {error}")
        decision = await read_confirmation_answer(answer, event.timeout_s)
        if decision is None:
            return  # no answer in time: the session's own timer settles the call by its policy
        approved, reason = decision
        try:
            # The event's session, not the turn's: a task's child asks through its parent's turn.
            self._core.send(event.session_id, Confirm(None, event.tool_id, approved, reason))
        except Exception as error:  # noqa: BLE001 - the Hive stopped or the session went: nothing to answer
            log.debug("sessionhive: on_confirmation answer not delivered: %s", error)
