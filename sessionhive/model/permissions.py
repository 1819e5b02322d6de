"""Permission rules: allow, deny or ask, by tool name and argument pattern."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sessionhive.model.errors import InvalidConfig

__all__ = ["PermissionDecision", "PermissionPolicy", "PermissionRule"]

PermissionDecision = Literal["allow", "deny", "ask"]
_ACTIONS = ("allow", "deny", "ask")


@dataclass(frozen=True)
class PermissionRule:
    """One rule: ``action`` applies to calls of tools matching ``tool`` (a glob).

    With ``pattern`` the rule only applies when an argument matches that glob:
    the argument named ``argument``, or, without it, any string argument.
    ``PermissionRule("deny", "bash", "rm *", argument="command")`` refuses any
    ``bash`` call whose command starts with ``rm``.
    """

    action: PermissionDecision
    tool: str = "*"
    pattern: str | None = None
    argument: str | None = None

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise InvalidConfig(f"PermissionRule.action must be one of {_ACTIONS}, got {self.action!r}")
        if not isinstance(self.tool, str) or not self.tool:
            raise InvalidConfig("PermissionRule.tool must be a non-empty glob such as 'bash' or '*'")

    def matches(self, tool_name: str, arguments: Mapping[str, Any]) -> bool:
        if not fnmatch.fnmatchcase(tool_name, self.tool):
            return False
        if self.pattern is None:
            return True
        candidates = [arguments.get(self.argument)] if self.argument is not None else list(arguments.values())
        return any(isinstance(v, str) and fnmatch.fnmatchcase(v, self.pattern) for v in candidates)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "tool": self.tool, "pattern": self.pattern, "argument": self.argument}


@dataclass(frozen=True)
class PermissionPolicy:
    """An ordered set of rules; among the rules that match a call, deny wins, then ask, then allow.

    When no rule matches, :meth:`decide` returns ``None`` and the session's
    :class:`~sessionhive.ConfirmationPolicy` decides whether a human is asked.
    """

    rules: tuple[PermissionRule, ...] = ()

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        for rule in rules:
            if not isinstance(rule, PermissionRule):
                raise InvalidConfig(f"PermissionPolicy.rules must hold PermissionRule objects, got {rule!r}")
        object.__setattr__(self, "rules", rules)

    def decide(self, tool_name: str, arguments: Mapping[str, Any]) -> PermissionDecision | None:
        matched = {rule.action for rule in self.rules if rule.matches(tool_name, arguments)}
        for action in ("deny", "ask", "allow"):
            if action in matched:
                return action
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"rules": [rule.to_dict() for rule in self.rules]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PermissionPolicy:
        return cls(tuple(PermissionRule(**rule) for rule in data.get("rules", ())))
