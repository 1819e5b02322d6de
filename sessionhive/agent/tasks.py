"""The built-in ``task`` tool as the agent loop sees it: its definition, its arguments, its runner.

A session with ``SessionConfig(task_tool=True)`` offers the model
``task(prompt, description)``. The loop treats a call of it as any tool call
(permission and confirmation rules, the journal, its ToolStart/ToolEnd
events) but runs it through the turn's :class:`TaskRunner` instead of the
tool executor: the runner belongs to the session layer, which alone can
create a child session and run a turn in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sessionhive.model.events import AgentEvent
from sessionhive.model.messages import ToolDefinition, ToolResult

__all__ = ["TASK_TOOL", "TASK_TOOL_NAME", "TaskRunner", "run_task_call"]

TASK_TOOL_NAME = "task"

TASK_TOOL = ToolDefinition(
    TASK_TOOL_NAME,
    "Hand a self-contained sub-task to a helper agent that works in a new session of its own, "
    "with the same tools and workspace, and get its final answer back. The helper sees none of "
    "this conversation: put everything it needs in the prompt.",
    {
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "description": "the complete instructions for the helper"},
            "description": {"type": "string", "description": "a short (3-8 words) name of the sub-task"},
        },
        "required": ["prompt", "description"],
        "additionalProperties": False,
    },
)


class TaskRunner(Protocol):
    """Runs one ``task`` call of a turn: a new child session, a turn in it, its answer as the result.

    ``relay`` takes the child's events that the calling turn's callers must
    see (its confirmation requests); it is called on the turn's loop.
    """

    async def run(self, call_id: str, prompt: str, description: str, relay: _Relay) -> ToolResult: ...


class _Relay(Protocol):
    def __call__(self, event: AgentEvent, /) -> None: ...


async def run_task_call(
    runner: TaskRunner, call_id: str, arguments: Mapping[str, Any], relay: _Relay
) -> ToolResult:
    """Check the model's arguments of a ``task`` call, then run it with ``runner``."""
    prompt, description = arguments.get("prompt"), arguments.get("description", "")
    if not isinstance(prompt, str) or not prompt.strip():
        return ToolResult(
            "error: task needs a non-empty string 'prompt' (the helper's complete instructions)", True
        )
    if not isinstance(description, str):
        return ToolResult("error: the task's 'description' must be a string", True)
    unknown = sorted(set(arguments) - {"prompt", "description"})
    if unknown:
        return ToolResult(f"error: task takes only 'prompt' and 'description', not {unknown}", True)
    return await runner.run(call_id, prompt, description, relay)
