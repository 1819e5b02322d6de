"""Which shard owns a session: rendezvous (highest random weight) hashing of its root's id.

Every session of a tree is placed by the id of the tree's root, so a parent
and its children always live on one shard. Rendezvous hashing moves only the
sessions of a shard that leaves (to the shards that score next best) and, when
a shard joins, only the sessions it now scores best for: about 1/N of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = ["Membership", "owner_of"]


def _score(shard_id: str, root_id: str) -> int:
    digest = hashlib.blake2b(f"{shard_id}\x00{root_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(root_id: str, shard_ids: Iterable[str]) -> str:
    """The shard among ``shard_ids`` that owns the tree rooted at ``root_id``."""
    best: str | None = None
    best_score = -1
    for shard_id in shard_ids:
        score = _score(shard_id, root_id)
        if score > best_score or (score == best_score and best is not None and shard_id < best):
            best, best_score = shard_id, score
    if best is None:
        raise ValueError("no shard to place a session on")
    return best


class Membership:
    """A numbered set of serving shards; a newer version replaces an older one everywhere."""

    __slots__ = ("shard_ids", "version")

    def __init__(self, version: int, shard_ids: Sequence[str]) -> None:
        self.version = version
        self.shard_ids = tuple(sorted(set(shard_ids)))

    def owner_of(self, root_id: str) -> str:
        return owner_of(root_id, self.shard_ids)

    def __repr__(self) -> str:
        return f"Membership(v{self.version}, {list(self.shard_ids)})"
