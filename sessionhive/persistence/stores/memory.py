"""The memory store: sessions in a dict as JSON text, gone with the process."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sessionhive.persistence.blobs import loaded_snapshot, stored_snapshot
from sessionhive.persistence.snapshot import SessionSnapshot
from sessionhive.persistence.stores.base import BaseStore

__all__ = ["MemoryStore"]


class MemoryStore(BaseStore):
    """Sessions in a dict, gone with the process: tests, demos, ``store="memory"``.

    It keeps each snapshot as JSON text, exactly as the durable stores do, so
    that whatever would not survive a real store (a value that is not JSON)
    fails here too, and a loaded snapshot shares nothing with the saved one.
    A batch is all or nothing: it is encoded in full before anything changes.
    """

    durable = False  # gone with the process: waiting for its commits would protect nothing

    def __init__(self) -> None:
        super().__init__("memory")
        self._data: dict[str, tuple[int, str]] = {}
        # Large content parts, once each by sha256 (never removed: a blob may be shared).
        self._blobs: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._data)} sessions)"

    def _do_write(self, newest: dict[str, SessionSnapshot], deletes: list[str]) -> dict[str, int]:
        blobs: dict[str, bytes] = {}
        encoded = [
            (snap.session_id, snap.version, json.dumps(stored_snapshot(snap, blobs), separators=(",", ":")))
            for snap in newest.values()
        ]
        for sha, data in blobs.items():
            self._blobs.setdefault(sha, data)
        for session_id in deletes:
            self._data.pop(session_id, None)
        written = 0
        for session_id, version, document in encoded:
            held = self._data.get(session_id)
            if held is None or held[0] < version:
                self._data[session_id] = (version, document)
                written += 1
        return {"sessions": written}

    def _do_load(self, session_id: str) -> SessionSnapshot | None:
        held = self._data.get(session_id)
        return None if held is None else loaded_snapshot(json.loads(held[1]), self._blobs, self._name)

    def _do_list_ids(self) -> Iterable[str]:
        return list(self._data)

    def _do_list_index(self) -> Iterable[tuple[str, str | None]]:
        return [(sid, json.loads(document).get("parent_id")) for sid, (_, document) in self._data.items()]

    def close(self) -> None:
        """Keeps the data: a closed MemoryStore can still be read (handy in tests)."""
