"""Context compaction: shrink a history without splitting a tool call from its result.

As in the reference: a history of more than :data:`COMPACT_MIN_MESSAGES`
messages keeps its first :data:`KEEP_HEAD` and its last :data:`KEEP_TAIL`
messages (each moved so that a tool call stays with its results) and the
middle is replaced with a summary written by the session's LLM. Before asking
the LLM, old and large tool outputs are replaced by a short marker; when that
alone brings the context under the target, no LLM call is made. Without an
LLM the same rules hold; the middle is replaced by :func:`omission_note`
instead of a summary. A history of :data:`COMPACT_MIN_MESSAGES` messages or
fewer is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from sessionhive.model.messages import Message
from sessionhive.model.tokens import count_tokens

__all__ = [
    "COMPACT_MIN_MESSAGES",
    "KEEP_HEAD",
    "KEEP_TAIL",
    "OMISSION_PREFIX",
    "SUMMARY_PREFIX",
    "estimate_tokens",
    "omission_note",
    "prune_tool_outputs",
    "split_for_summary",
    "summary_prompt",
    "truncate",
]

COMPACT_MIN_MESSAGES = 30
KEEP_HEAD = 2
KEEP_TAIL = 20
LARGE_TOOL_OUTPUT_CHARS = 2_000
SUMMARY_PREFIX = "[Summary of the earlier conversation]\n"
OMISSION_PREFIX = "[Earlier conversation removed]\n"


def estimate_tokens(messages: Sequence[Message], system: str | None = None) -> int:
    """A provider-independent estimate, used where no LLM reported usage yet."""
    total = count_tokens(system or "")
    for message in messages:
        total += count_tokens(message.text) + 1
        total += sum(1 + count_tokens(str(call.arguments)) for call in message.tool_calls)
    return total


def _tail_start(messages: Sequence[Message], keep: int) -> int:
    """Index where the kept tail begins, moved back so it never opens on a tool result."""
    start = max(0, len(messages) - keep)
    while 0 < start < len(messages) and messages[start].role == "tool":
        start -= 1
    return start


def _head_end(messages: Sequence[Message], keep: int) -> int:
    """Index where the kept head ends, moved forward past the results of its tool calls."""
    end = min(keep, len(messages))
    while end < len(messages) and messages[end].role == "tool":
        end += 1
    return end


def truncate(messages: Sequence[Message], keep: int = KEEP_TAIL) -> tuple[Message, ...]:
    """The last ``keep`` messages (a few more if needed to keep tool calls whole)."""
    if len(messages) <= keep:
        return tuple(messages)
    return tuple(messages[_tail_start(messages, keep) :])


def prune_tool_outputs(
    messages: Sequence[Message], keep_tail: int = KEEP_TAIL, max_chars: int = LARGE_TOOL_OUTPUT_CHARS
) -> tuple[Message, ...]:
    """Replace large tool outputs older than the kept tail by a marker."""
    tail = _tail_start(messages, keep_tail)
    pruned: list[Message] = []
    for index, message in enumerate(messages):
        if index < tail and message.role == "tool" and len(message.text) > max_chars:
            marker = f"[tool output of {len(message.text)} characters removed by compaction]"
            message = Message("tool", marker, (), message.tool_call_id, message.is_error)
        pruned.append(message)
    return tuple(pruned)


def split_for_summary(
    messages: Sequence[Message],
) -> tuple[tuple[Message, ...], tuple[Message, ...], tuple[Message, ...]] | None:
    """(head, middle, tail) for summarising, or ``None`` when there is nothing to summarise."""
    if len(messages) <= COMPACT_MIN_MESSAGES:
        return None
    head_end = _head_end(messages, KEEP_HEAD)
    tail_start = max(head_end, _tail_start(messages, KEEP_TAIL))
    middle = tuple(messages[head_end:tail_start])
    if not middle:
        return None
    return tuple(messages[:head_end]), middle, tuple(messages[tail_start:])


def omission_note(middle: Sequence[Message]) -> Message:
    """What stands in for ``middle`` when no LLM can summarise it, so the model knows something is gone."""
    return Message.user(
        f"{OMISSION_PREFIX}{len(middle)} earlier messages were removed to save context; "
        "no summary of them is available."
    )


def summary_prompt(middle: Sequence[Message]) -> tuple[Message, ...]:
    """The conversation the LLM is asked to summarise, as one user message."""
    lines = []
    for message in middle:
        if message.role == "tool":
            lines.append(f"tool result ({message.tool_call_id}): {message.text}")
        else:
            calls = "".join(f" [calls {c.name}({c.arguments})]" for c in message.tool_calls)
            lines.append(f"{message.role}: {message.text}{calls}")
    request = (
        "Summarise the following part of a conversation between a user and an assistant that uses "
        "tools. Keep every fact, decision, file name and open task needed to continue the work. "
        "Answer with the summary only.\n\n" + "\n".join(lines)
    )
    return (Message.user(request),)
