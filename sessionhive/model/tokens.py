"""The one token estimate used where no model reports real counts (compaction, the scripted model)."""

from __future__ import annotations

__all__ = ["count_tokens"]


def count_tokens(text: str) -> int:
    """A cheap, deterministic token count: one token per whitespace-separated word."""
    return len(text.split())
