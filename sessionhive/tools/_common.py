"""What every tool shares: the call context, the tool-error exception, and output capping."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CappedText", "ToolContext", "ToolError", "truncate"]


@dataclass(frozen=True)
class ToolContext:
    """Where and for whom a tool call runs.

    A tool function receives one when it declares a ``context`` keyword
    parameter. ``workspace`` is the session's workspace directory, already
    resolved (``os.path.realpath``) and known to exist; ``session_id`` names
    the calling session (empty when the caller gave none); ``allow_network``
    is whether the session lets ``bash`` reach the network
    (``SessionConfig.allow_network``).
    """

    workspace: Path
    session_id: str
    allow_network: bool = False


class ToolError(Exception):
    """A tool failed in a way the LLM can fix; the message is shown to it verbatim.

    Raised by the built-in tools and by argument validation. Any other
    exception from a tool is reported too, but prefixed with its type, and
    logged with its traceback because it likely is a bug in the tool.
    """


def _marker(cut: int) -> str:
    return f"\n[... {cut} characters cut ...]\n"


def _cut(prefix: str, suffix: str, total: int, cap: int) -> str:
    """Head and tail of a text of ``total`` characters, at most ``cap`` characters with the marker.

    ``prefix`` starts and ``suffix`` ends the text; each must be at least as
    long as the part kept from it (about ``cap / 2``).
    """
    # The marker for ``total`` is never shorter than the one for the real cut count,
    # so sizing the kept parts with it keeps the result within ``cap``.
    keep = max(cap - len(_marker(total)), 0)
    head = keep - keep // 2
    tail = keep // 2
    return prefix[:head] + _marker(total - head - tail) + suffix[len(suffix) - tail :]


def truncate(text: str, cap: int) -> str:
    """``text`` itself when it fits in ``cap`` characters, else its head and tail around a marker.

    The marker says how many characters were cut; the result (marker
    included) is never longer than ``cap``. Head and tail are both kept
    because the end of an output (a stack trace, a test summary) is often
    what matters most.
    """
    if len(text) <= cap:
        return text
    return _cut(text, text, len(text), cap)


class CappedText:
    """Accumulates a UTF-8 byte stream, keeping only the first and last ``cap`` characters.

    For outputs of unbounded size (a command printing forever until its
    timeout): memory stays ``O(cap)`` while the total character count, and so
    the number of characters cut, stays exact.
    """

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""
        self._total = 0

    def feed(self, data: bytes, *, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        self._total += len(text)
        room = self._cap - self._head_len
        if room > 0:
            kept = text[:room]
            self._head.append(kept)
            self._head_len += len(kept)
            text = text[room:]
        if text:
            self._tail = (self._tail + text)[-self._cap :]

    def render(self, cap: int) -> str:
        """The text, truncated like :func:`truncate` to ``cap`` (at most the constructor's cap)."""
        self.feed(b"", final=True)
        head = "".join(self._head)
        if self._total == len(head) + len(self._tail):
            whole = head + self._tail
            return truncate(whole, cap)
        # Text between head and tail was dropped, so the tail holds a full ``cap`` characters.
        return _cut(head, self._tail, self._total, cap)
