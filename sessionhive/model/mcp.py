"""The :class:`McpServer` declaration: one MCP tool server an operator offers to a Hive's sessions."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sessionhive.model.errors import InvalidConfig
from sessionhive.model.validate import check_positive_number

__all__ = ["McpServer"]

# The name prefixes each tool as ``<server>__<tool>``, so it must fit a tool name itself.
_SERVER_NAME = re.compile(r"[A-Za-z0-9-]{1,32}")


@dataclass(frozen=True)
class McpServer:
    """An MCP server: a command run over stdio (sandboxed like ``bash``), or a streamable-HTTP URL.

    ``env`` is added to the sandbox's allow-listed environment; ``cwd`` is
    where the command starts (default: the workspace). ``readable`` are host
    paths the sandboxed command may read (its interpreter's libraries, say);
    only the workspace is writable. ``allow_network`` lets a stdio server
    reach the network. ``sandboxed=False`` runs the command unconfined (the
    operator's explicit opt-out, as ``unsandboxed_bash`` for ``bash``).
    The connection closes after ``idle_s`` seconds without a call.
    """

    name: str
    command: Sequence[str] = ()
    url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    readable: Sequence[str] = ()
    allow_network: bool = False
    sandboxed: bool = True
    idle_s: float = 300.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SERVER_NAME.fullmatch(self.name):
            raise InvalidConfig(f"MCP server name {self.name!r} must be 1-32 letters, digits or '-'")
        if isinstance(self.command, str):
            raise InvalidConfig("McpServer command must be a list of arguments, not one string")
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "readable", tuple(self.readable))
        object.__setattr__(self, "env", dict(self.env))
        check_positive_number("McpServer.idle_s", self.idle_s)
        if bool(self.command) == (self.url is not None):
            raise InvalidConfig(f"MCP server {self.name!r} needs exactly one of command=[...] or url=...")
