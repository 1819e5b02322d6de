"""The one small protocol every session store implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sessionhive.persistence.snapshot import SessionSnapshot

__all__ = ["SessionStore"]


@runtime_checkable
class SessionStore(Protocol):
    """Where snapshots live. Only the PersistenceActor calls a store.

    ``write_batch`` applies ``deletes`` first, then ``snapshots``, in one
    transaction: all of it commits or none of it does. A snapshot whose
    version is not newer than the stored one is skipped. Transient failures
    raise; the caller retries with the same batch.

    A store may also offer ``list_index() -> list[(id, parent_id)]`` (the
    built-in ones do, in one query); without it the Hive loads each session
    at start to learn its parent.
    """

    @property
    def name(self) -> str: ...

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None: ...

    def load(self, session_id: str) -> SessionSnapshot | None: ...

    def list_ids(self) -> list[str]: ...

    def health_check(self) -> None: ...

    def close(self) -> None: ...
