"""Tools: the :class:`ToolExecutor`, the built-in workspace tools, and permission rules.

The executor runs every tool call an LLM makes, confined to the calling
session's workspace, and turns whatever a call gets wrong into an error the
LLM sees instead of an exception. :class:`PermissionPolicy` rules decide which
calls are allowed, denied, or asked of a human.
"""

from __future__ import annotations

from sessionhive.model.permissions import PermissionPolicy, PermissionRule
from sessionhive.tools._common import ToolContext
from sessionhive.tools.builtins import BUILTIN_TOOLS
from sessionhive.tools.executor import ToolExecutor

__all__ = ["BUILTIN_TOOLS", "PermissionPolicy", "PermissionRule", "ToolContext", "ToolExecutor"]
