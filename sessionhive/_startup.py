"""Start-up: ``Hive.start``'s arguments declared once, and the blocking half of starting a Hive.

:class:`HiveOptions` holds and checks every argument of ``Hive.start`` and
``AsyncHive.start`` (:func:`taking` turns it into their signature), and
:class:`Prepared` does what must not run on an event loop: the workspace
check, opening the store and reading its index, the persistence thread, the
webhook outbox and the tool executor. :class:`~sessionhive._core.HiveCore`
starts the actors on what it prepared.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pykka

from sessionhive.actors.directory import Directory
from sessionhive.actors.messages import PersistFailed
from sessionhive.actors.webhooks import WebhookDeliverer
from sessionhive.api import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAILBOX_SIZE,
    DEFAULT_MAX_CONCURRENT_TURNS,
    DEFAULT_RESTART_LIMIT,
    DEFAULT_RESTART_WINDOW,
    DEFAULT_SUBSCRIBER_QUEUE_SIZE,
)
from sessionhive.llm import ClientCache, LlmClient
from sessionhive.llm.keys import EndpointKeys
from sessionhive.metrics.registry import HiveMetrics, MetricsConfig
from sessionhive.model.budget import Budget
from sessionhive.model.errors import InvalidConfig, StoreError
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.mcp import McpServer
from sessionhive.model.runs import DEFAULT_MAX_FINISHED_RUNS
from sessionhive.model.urls import BaseUrlPolicy
from sessionhive.model.validate import check_instance, check_positive_int, check_positive_number
from sessionhive.persistence.messages import Backlog
from sessionhive.runtime import ActorBackend, ThreadBackend
from sessionhive.tools import ToolExecutor
from sessionhive.tools.mcp import McpHub

__all__ = ["DEFAULT_ACTOR_BACKEND", "DEFAULT_STORE", "HiveOptions", "Prepared", "taking"]

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_STORE = "sqlite:///sessionhive.db"
DEFAULT_ACTOR_BACKEND = "asyncio"


@dataclass(frozen=True)
class HiveOptions:
    """``Hive.start``'s arguments, declared and validated once for both facades (see :func:`taking`)."""

    store: Any = DEFAULT_STORE
    llm: LlmConfig | LlmClient | None = None
    workspace: str | os.PathLike[str] = "."
    metrics: MetricsConfig | None = None
    _: KW_ONLY
    actor_backend: str | ActorBackend | None = None
    tools: ToolExecutor | None = None
    idle_timeout: float | None = None
    max_live_sessions: int | None = None
    batch_size: int | None = None
    flush_interval: float | None = None
    max_concurrent_turns: int = DEFAULT_MAX_CONCURRENT_TURNS
    subscriber_queue_size: int = DEFAULT_SUBSCRIBER_QUEUE_SIZE
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    mailbox_size: int = DEFAULT_MAILBOX_SIZE
    restart_limit: int = DEFAULT_RESTART_LIMIT
    restart_window: float = DEFAULT_RESTART_WINDOW
    shared_store: bool = False
    allow_base_urls: Sequence[str] | None = None
    trace_content: bool = False
    budget: Budget | None = None
    mcp_servers: Sequence[McpServer] = ()
    max_finished_runs: int = DEFAULT_MAX_FINISHED_RUNS
    #: Signs webhook deliveries whose Webhook has no secret of its own (or lost it in a restart).
    webhook_secret: str | bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mcp_servers", tuple(self.mcp_servers))
        for server in self.mcp_servers:
            check_instance("mcp_servers[]", server, McpServer)
        if self.allow_base_urls is not None:
            # One list, parsed now: a malformed entry fails the start, not the first configure.
            if isinstance(self.allow_base_urls, str):
                raise InvalidConfig("allow_base_urls must be a list of URLs, not one string")
            object.__setattr__(self, "allow_base_urls", tuple(self.allow_base_urls))
            BaseUrlPolicy(self.allow_base_urls)
        check_positive_int("max_concurrent_turns", self.max_concurrent_turns)
        check_instance("budget", self.budget, Budget, optional=True)
        check_positive_int("subscriber_queue_size", self.subscriber_queue_size)
        check_positive_int("mailbox_size", self.mailbox_size)
        check_positive_int("max_finished_runs", self.max_finished_runs)
        check_positive_int("restart_limit", self.restart_limit)
        check_positive_number("call_timeout", self.call_timeout)
        check_positive_number("restart_window", self.restart_window)
        if self.idle_timeout is not None:
            check_positive_number("idle_timeout", self.idle_timeout)
        if self.max_live_sessions is not None:
            check_positive_int("max_live_sessions", self.max_live_sessions)
        if self.llm is not None and not isinstance(self.llm, LlmConfig | LlmClient):
            raise InvalidConfig("llm must be an LlmConfig, an LlmClient (such as ScriptedLlm) or None")

    def backend_name(self) -> str:
        choice = self.actor_backend
        if choice is None:
            choice = os.environ.get("SESSIONHIVE_ACTOR_BACKEND") or DEFAULT_ACTOR_BACKEND
        if isinstance(choice, str):
            if choice not in ("asyncio", "pooled", "threads"):
                raise InvalidConfig(f"actor_backend must be 'asyncio', 'pooled' or 'threads', got {choice!r}")
            return choice
        return getattr(choice, "name", "custom")


def taking(options: Callable[P, HiveOptions], start: Callable[[HiveOptions], T]) -> Callable[P, T]:
    """``start`` as a function of ``options``' arguments: ``Hive.start`` and ``AsyncHive.start``.

    The arguments are declared once, as :class:`HiveOptions`' fields; mypy and
    ``help()`` see them on both facades' ``start``.
    """

    def start_with(*args: P.args, **kwargs: P.kwargs) -> T:
        return start(options(*args, **kwargs))

    functools.update_wrapper(start_with, start)
    start_with.__signature__ = inspect.signature(options)  # type: ignore[attr-defined]
    return start_with


class Prepared:
    """The blocking half of start-up (files, the store, its index), done off any event loop."""

    def __init__(self, options: HiveOptions) -> None:
        from sessionhive.persistence import PersistenceActor, open_store
        from sessionhive.persistence.messages import ListIndex

        self.options = options
        self.workspace = Path(options.workspace).resolve()
        if not self.workspace.is_dir():
            raise InvalidConfig(f"workspace {str(self.workspace)!r} is not a directory")
        self.backend_name = options.backend_name()
        metrics_config = options.metrics or MetricsConfig()
        self.metrics_config = metrics_config
        self.metrics = HiveMetrics(metrics_config.registry)
        self.llm_clients = self._client_cache(options)
        self.default_llm, self.default_llm_config = self._default_llm(options.llm)
        store = open_store(options.store)
        self.backlog = Backlog()
        self.durable_store: bool = getattr(store, "durable", True)
        persistence_options: dict[str, Any] = {
            "metrics": self.metrics,
            "on_failure": self._on_persist_failure,
            "backlog": self.backlog,
        }
        if options.batch_size is not None:
            persistence_options["batch_size"] = options.batch_size
        if options.flush_interval is not None:
            persistence_options["flush_interval"] = options.flush_interval
        if options.shared_store:
            # Other writers add sessions: never answer "no such session" from
            # the ids read at start, ask the store.
            persistence_options["cache_ids"] = False
        # The persistence actor keeps a thread of its own whatever the
        # backend: database I/O must never run on the actors' loop or pool.
        self.persistence = ThreadBackend().spawn(PersistenceActor, store, **persistence_options)
        index: concurrent.futures.Future[list[tuple[str, str | None]]] = concurrent.futures.Future()
        self.persistence.tell(ListIndex(index))
        try:
            self.stored = index.result(timeout=max(options.call_timeout, DEFAULT_CALL_TIMEOUT))
        except Exception as exc:
            self.persistence.stop()
            raise StoreError(f"cannot read the session index from {store.name}: {exc}") from exc
        # Its outbox lives beside the sessions; deliveries a last run left start on their way now.
        self.webhooks = WebhookDeliverer.open(
            store, server_secret=options.webhook_secret, metrics=self.metrics
        )
        self.tools = options.tools or ToolExecutor(self.workspace)
        if options.mcp_servers:
            hub = McpHub(
                options.mcp_servers,
                self.workspace,
                allow_urls=options.allow_base_urls,
                metrics=self.metrics,
            )
            self.tools.attach_mcp(hub)
        hide, data_paths = getattr(self.tools, "hide_from_bash", None), getattr(store, "data_paths", None)
        if callable(hide) and callable(data_paths):
            hide(*data_paths())  # the store's files are nobody's business inside the bash sandbox
        self.directory: Directory | None = None  # set once launched

    def _client_cache(self, options: HiveOptions) -> ClientCache:
        # The Hive's own model is the operator's: its endpoint is allowed, and its key belongs there.
        operator_llm = options.llm if isinstance(options.llm, LlmConfig) else None
        own = (operator_llm.base_url,) if operator_llm is not None and operator_llm.base_url else ()
        policy = BaseUrlPolicy(options.allow_base_urls, operator=own)
        return ClientCache(self.metrics, policy=policy, keys=EndpointKeys.for_hive(operator_llm, policy))

    def _default_llm(self, llm: LlmConfig | LlmClient | None) -> tuple[LlmClient | None, LlmConfig | None]:
        if isinstance(llm, LlmConfig):
            return self.llm_clients.get(llm), llm.without_key()
        if llm is None:
            return None, None
        known = llm.provider in ("openai", "anthropic", "scripted")
        return llm, (LlmConfig(llm.provider, llm.model) if known else None)

    def _on_persist_failure(self, session_id: str, error: str) -> None:
        # Runs on the persistence thread: a directory lookup and a tell, to a live session only.
        directory = self.directory
        entry = directory.live.get(session_id) if directory is not None else None
        if entry is not None and entry.ref is not None:
            try:
                entry.ref.tell(PersistFailed("save", error))
            except pykka.ActorDeadError:
                pass
