"""Per-session configuration: :class:`SessionConfig` and :class:`ConfirmationPolicy`.

Both validate at construction: an invalid value raises
:class:`~sessionhive.InvalidConfig` immediately, never later inside an actor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sessionhive.model._plain import fields_dict
from sessionhive.model.budget import Budget
from sessionhive.model.errors import InvalidConfig
from sessionhive.model.permissions import PermissionPolicy
from sessionhive.model.validate import check_int, check_number, check_path, check_positive_number

__all__ = ["DEFAULT_CONFIRMED_TOOLS", "ConfirmationPolicy", "SessionConfig"]

DEFAULT_CONFIRMED_TOOLS: tuple[str, ...] = ("write_file", "edit_file", "bash")
#: How deep a tree of ``task`` calls may grow: the root's tasks are depth 1, theirs depth 2.
DEFAULT_TASK_MAX_DEPTH = 2
#: ``task`` calls one turn may make (they run one at a time, as every tool call of a turn does).
DEFAULT_TASK_MAX_PER_TURN = 8

#: Acknowledged means committed unless a session opts into ``"batched"`` (issue 20):
#: group commit makes the durable turn cost within 10% of a batched one (bench/bench_durability.py).
DEFAULT_DURABILITY: Literal["durable"] = "durable"
#: Accepted spellings; ``"sync"`` (the name before the durable default) means ``"durable"``.
DURABILITIES = ("durable", "batched", "sync")


@dataclass(frozen=True)
class ConfirmationPolicy:
    """Which tool calls wait for a human yes, and what happens when nobody answers.

    ``require_confirmation`` is a tuple of tool names or ``"all"``. After
    ``timeout_s`` seconds a waiting call is resolved by ``on_timeout``
    (``"reject"`` or ``"approve"``). Equal policies compare equal.
    """

    enabled: bool = True
    require_confirmation: tuple[str, ...] | Literal["all"] = DEFAULT_CONFIRMED_TOOLS
    timeout_s: float = 30.0
    on_timeout: Literal["reject", "approve"] = "reject"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise InvalidConfig(f"ConfirmationPolicy.enabled must be a bool, got {self.enabled!r}")
        required = self.require_confirmation
        if required != "all":
            if isinstance(required, str):
                required = (required,)
            try:
                required = tuple(required)
            except TypeError:
                raise InvalidConfig(
                    "ConfirmationPolicy.require_confirmation must be 'all' or a list of tool names"
                ) from None
            if not all(isinstance(name, str) and name for name in required):
                raise InvalidConfig("ConfirmationPolicy.require_confirmation must hold tool names")
            object.__setattr__(self, "require_confirmation", required)
        check_positive_number("ConfirmationPolicy.timeout_s", self.timeout_s, unit="seconds")
        if self.on_timeout not in ("reject", "approve"):
            raise InvalidConfig(
                f"ConfirmationPolicy.on_timeout must be 'reject' or 'approve', got {self.on_timeout!r}"
            )

    def requires(self, tool_name: str) -> bool:
        """Whether a call of ``tool_name`` waits for a human under this policy."""
        if not self.enabled:
            return False
        required = self.require_confirmation
        if required == "all" or tool_name in required:
            return True
        # "<server>__*" names every tool of one MCP server.
        server, sep, _ = tool_name.partition("__")
        return bool(sep) and f"{server}__*" in required

    def to_dict(self) -> dict[str, Any]:
        required = self.require_confirmation
        return {
            "enabled": self.enabled,
            "require_confirmation": required if required == "all" else list(required),
            "timeout_s": self.timeout_s,
            "on_timeout": self.on_timeout,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfirmationPolicy:
        required = data.get("require_confirmation", DEFAULT_CONFIRMED_TOOLS)
        return cls(
            enabled=data.get("enabled", True),
            require_confirmation=required if required == "all" else tuple(required),
            timeout_s=data.get("timeout_s", 30.0),
            on_timeout=data.get("on_timeout", "reject"),
        )


def _server_names(names: Sequence[str] | None) -> tuple[str, ...] | None:
    """``SessionConfig.mcp_servers`` checked: None (every server of the Hive) or a tuple of names."""
    if names is None:
        return None
    if isinstance(names, str):
        raise InvalidConfig("SessionConfig.mcp_servers must be a list of server names, not one string")
    if not all(isinstance(name, str) and name for name in names):
        raise InvalidConfig("SessionConfig.mcp_servers must hold MCP server names")
    return tuple(names)


#: How many bytes of images and files a session's history holds at most, unless configured.
DEFAULT_MAX_CONTENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class SessionConfig:
    """How one session behaves.

    - ``workspace``: the directory its tools are confined to (default: the Hive's).
    - ``max_context_length``: context window in tokens (0: the default, 200,000).
    - ``auto_compact`` / ``auto_compact_threshold``: compact after a turn that
      leaves the context fuller than the threshold (a fraction in (0, 1]).
    - ``confirmation_policy``: ``None`` takes the default policy, or the
      parent's for a child session.
    - ``storage``: ``"memory"`` keeps this session out of the store.
    - ``durability``: ``"durable"`` (the default; ``"sync"`` is accepted as
      an alias) acknowledges a turn, each of its steps and every call that
      changes the session only once the change committed, sharing each
      commit with every session waiting (group commit). ``"batched"`` answers
      first and commits within the Hive's ``flush_interval`` of the answer;
      when the store falls behind, turns wait for it (see README,
      "Durability").
    - ``max_tool_rounds``: LLM calls per turn before it ends with a TurnError.
    - ``allow_network``: let this session's ``bash`` commands use the network
      (the sandbox cuts it off by default).
    - ``resume_interrupted``: when the session is restored with a turn that a
      crash interrupted, continue that turn from its journal (no completed
      model call or stored tool result is repeated) instead of closing it.
      At-most-once tool effects need the durable default: under
      ``"batched"`` the last steps before a crash may be lost and run again.
    - ``budget``: caps the model spending of this session and its children
      (:class:`~sessionhive.Budget`); a turn it stops ends with
      ``stop_reason="budget"``.
    - ``task_tool``: offer the model the built-in ``task(prompt, description)``
      tool, which runs ``prompt`` as a turn of a new child session and returns
      its answer (README, "Task tool"). ``task_max_depth`` bounds how deep the
      tree of tasks grows (a root session's tasks are depth 1),
      ``task_max_per_turn`` how many tasks one turn may start.
      ``task_child_config`` is the children's config (default: this one,
      without its budget: a child spends from its ancestors' budgets anyway);
      a child without a workspace or confirmation policy of its own takes
      this session's.
    - ``max_content_bytes``: the most bytes of images and files the
      session's history may hold (its prompts' and its tool results'); a
      prompt that would pass it is refused.
    """

    system_prompt: str | None = None
    workspace: str | None = None
    max_context_length: int = 0
    auto_compact: bool = False
    auto_compact_threshold: float = 0.8
    confirmation_policy: ConfirmationPolicy | None = None
    permission_policy: PermissionPolicy | None = None
    storage: Literal["default", "memory"] = "default"
    durability: Literal["durable", "batched", "sync"] = DEFAULT_DURABILITY
    max_tool_rounds: int = 50
    allow_network: bool = False
    resume_interrupted: bool = False
    budget: Budget | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    mcp_servers: Sequence[str] | None = None
    task_tool: bool = False
    task_max_depth: int = DEFAULT_TASK_MAX_DEPTH
    task_max_per_turn: int = DEFAULT_TASK_MAX_PER_TURN
    task_child_config: SessionConfig | None = None
    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES

    def __post_init__(self) -> None:
        object.__setattr__(self, "mcp_servers", _server_names(self.mcp_servers))
        self._check_tasks()
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise InvalidConfig("SessionConfig.system_prompt must be a string or None")
        if isinstance(self.workspace, Path):
            object.__setattr__(self, "workspace", str(self.workspace))
        if self.workspace is not None:
            check_path("SessionConfig.workspace", self.workspace)
        check_int("SessionConfig.max_context_length", self.max_context_length, minimum=0)
        check_int("SessionConfig.max_tool_rounds", self.max_tool_rounds, minimum=1)
        check_int("SessionConfig.max_content_bytes", self.max_content_bytes, minimum=0)
        for flag in ("auto_compact", "allow_network", "resume_interrupted", "task_tool"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidConfig(f"SessionConfig.{flag} must be a bool, got {getattr(self, flag)!r}")
        check_number(
            "SessionConfig.auto_compact_threshold",
            self.auto_compact_threshold,
            minimum=0.0,
            exclusive_minimum=True,
            maximum=1.0,
        )
        if self.confirmation_policy is not None and not isinstance(
            self.confirmation_policy, ConfirmationPolicy
        ):
            raise InvalidConfig("SessionConfig.confirmation_policy must be a ConfirmationPolicy or None")
        if self.permission_policy is not None and not isinstance(self.permission_policy, PermissionPolicy):
            raise InvalidConfig("SessionConfig.permission_policy must be a PermissionPolicy or None")
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise InvalidConfig("SessionConfig.budget must be a Budget or None")
        if self.storage not in ("default", "memory"):
            raise InvalidConfig(f"SessionConfig.storage must be 'default' or 'memory', got {self.storage!r}")
        if self.durability not in DURABILITIES:
            raise InvalidConfig(
                "SessionConfig.durability must be 'durable' (alias 'sync') or 'batched', "
                f"got {self.durability!r}"
            )
        if self.durability == "sync":
            object.__setattr__(self, "durability", "durable")  # one spelling from here on

    def _check_tasks(self) -> None:
        check_int("SessionConfig.task_max_depth", self.task_max_depth, minimum=1)
        check_int("SessionConfig.task_max_per_turn", self.task_max_per_turn, minimum=1)
        if self.task_child_config is not None and not isinstance(self.task_child_config, SessionConfig):
            raise InvalidConfig("SessionConfig.task_child_config must be a SessionConfig or None")

    def to_dict(self) -> dict[str, Any]:
        return fields_dict(
            self,
            confirmation_policy=self.confirmation_policy.to_dict() if self.confirmation_policy else None,
            permission_policy=self.permission_policy.to_dict() if self.permission_policy else None,
            budget=self.budget.to_dict() if self.budget else None,
            mcp_servers=list(self.mcp_servers) if self.mcp_servers is not None else None,
            task_child_config=self.task_child_config.to_dict() if self.task_child_config else None,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionConfig:
        confirmation = data.get("confirmation_policy")
        permission = data.get("permission_policy")
        child = data.get("task_child_config")
        return cls(
            system_prompt=data.get("system_prompt"),
            workspace=data.get("workspace"),
            max_context_length=data.get("max_context_length", 0),
            auto_compact=data.get("auto_compact", False),
            auto_compact_threshold=data.get("auto_compact_threshold", 0.8),
            confirmation_policy=ConfirmationPolicy.from_dict(confirmation) if confirmation else None,
            permission_policy=PermissionPolicy.from_dict(permission) if permission else None,
            storage=data.get("storage", "default"),
            durability=data.get("durability", DEFAULT_DURABILITY),
            max_tool_rounds=data.get("max_tool_rounds", 50),
            allow_network=data.get("allow_network", False),
            resume_interrupted=data.get("resume_interrupted", False),
            budget=Budget.from_dict(data["budget"]) if data.get("budget") else None,
            metadata=dict(data.get("metadata") or {}),
            mcp_servers=tuple(data["mcp_servers"]) if data.get("mcp_servers") is not None else None,
            task_tool=data.get("task_tool", False),
            task_max_depth=data.get("task_max_depth", DEFAULT_TASK_MAX_DEPTH),
            task_max_per_turn=data.get("task_max_per_turn", DEFAULT_TASK_MAX_PER_TURN),
            task_child_config=cls.from_dict(child) if child else None,
            max_content_bytes=data.get("max_content_bytes", DEFAULT_MAX_CONTENT_BYTES),
        )
