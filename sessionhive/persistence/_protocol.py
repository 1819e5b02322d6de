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
    """

    @property
    def name(self) -> str: ...

    def write_batch(self, snapshots: Sequence[SessionSnapshot], deletes: Sequence[str]) -> None: ...

    def load(self, session_id: str) -> SessionSnapshot | None: ...

    def list_ids(self) -> list[str]: ...

    def list_index(self) -> list[tuple[str, str | None]]:
        """Every stored session id with its parent's id (the supervisor's registry at start)."""
        ...

    def health_check(self) -> None: ...

    def close(self) -> None: ...
