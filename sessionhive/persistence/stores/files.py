"""The file store: one JSON file per session in a directory, each replaced atomically."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sessionhive.model.errors import StoreError
from sessionhive.persistence.blobs import blob_refs, loaded_snapshot, stored_snapshot
from sessionhive.persistence.snapshot import SCHEMA_VERSION, SessionSnapshot
from sessionhive.persistence.stores.base import BaseStore, wrap_error

__all__ = ["FileStore", "atomic_write"]

logger = logging.getLogger("sessionhive.persistence")

_META_FILE = ".sessionhive-meta.json"
# Large content parts, one file per sha256 (hidden: never taken for a session file).
_BLOB_DIR = ".blobs"
# Longest encoded name kept readable; longer ids are hashed (file names are
# limited to 255 bytes on common file systems).
_MAX_ENCODED = 200
# How every session file this store writes begins (json.dumps of to_dict(),
# whose first key is the id): a cheap test that a ``*.json`` file is ours.
_OWN_PREFIX = b'{"session_id":'


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its os.replace is already durable enough
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _encoded_name(session_id: str) -> str:
    encoded = base64.b32encode(session_id.encode("utf-8")).decode("ascii").rstrip("=").lower()
    if len(encoded) > _MAX_ENCODED:
        encoded = "~" + hashlib.sha256(session_id.encode("utf-8")).hexdigest()
    return encoded


def _decoded_id(stem: str) -> str | None:
    """The session id a readable file name encodes, or ``None`` if this store never names a file so."""
    try:
        session_id = base64.b32decode(stem.upper() + "=" * (-len(stem) % 8)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return session_id if _encoded_name(session_id) == stem else None


class FileStore(BaseStore):
    """One JSON file per session in ``directory``; for small deployments and inspection by eye.

    A session's file is named after its id, base32-encoded in lower case
    (case-insensitive file systems cannot tell base64's ``a`` from ``A``);
    an id whose encoding would be too long for a file name gets the SHA-256
    of the id instead, and its file carries the id. Each file is replaced
    atomically (temporary file in the same directory, ``fsync``,
    ``os.replace``, ``fsync`` of the directory), so a crash leaves the old or
    the new version of a session, never a torn one. A batch is not atomic
    across sessions: it is applied one file after another, deletes first.

    Other files in the directory (a note, a backup, ``*.json`` that this
    store did not write) are skipped when listing, with one warning per file.

    Every write rewrites the whole history of the session: use
    :class:`~sessionhive.persistence.SqlStore` for long histories.
    """

    _wrapped_errors = (OSError, ValueError, KeyError, TypeError)

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._dir = Path(directory)
        super().__init__(f"file:{os.path.abspath(self._dir)}")
        self._foreign_logged: set[str] = set()
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._check_meta()
        except StoreError:
            raise
        except (OSError, ValueError) as exc:
            raise wrap_error(exc, self._name, "opening") from exc

    def _check_meta(self) -> None:
        meta = self._dir / _META_FILE
        stored: int | None = None
        if meta.exists():
            data = json.loads(meta.read_text("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("schema_version"), int):
                raise StoreError(f"store {self._name}: {_META_FILE} was not written by sessionhive")
            stored = int(data["schema_version"])
            if stored > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self._name} was written by a newer sessionhive "
                    f"(schema {stored} > {SCHEMA_VERSION}); upgrade sessionhive to open it"
                )
        if stored != SCHEMA_VERSION:
            atomic_write(meta, json.dumps({"schema_version": SCHEMA_VERSION}).encode())
            _fsync_dir(self._dir)

    def _path(self, session_id: str) -> Path:
        return self._dir / f"{_encoded_name(session_id)}.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError(f"{path.name} does not hold a JSON object")
        schema = int(data.get("schema_version", SCHEMA_VERSION))
        if schema > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer sessionhive (schema {schema} > {SCHEMA_VERSION}); "
                "upgrade sessionhive to read it"
            )
        return data

    def _skip_foreign(self, name: str, why: str) -> None:
        # Once per file and store: a directory listed at every start must not flood the log.
        if name not in self._foreign_logged:
            self._foreign_logged.add(name)
            logger.warning(
                "store %s: skipping %s, which is not a session file of this store (%s)", self._name, name, why
            )

    def _owned_id(self, entry: os.DirEntry[str]) -> str | None:
        """The session id held by ``entry``, or ``None`` (logged once) when the file is not this store's."""
        stem = entry.name[: -len(".json")]
        try:
            with open(entry.path, "rb") as handle:
                head = handle.read(len(_OWN_PREFIX))
        except FileNotFoundError:
            return None  # deleted while listing
        if head != _OWN_PREFIX:
            self._skip_foreign(entry.name, "it does not hold a sessionhive snapshot")
            return None
        if stem.startswith("~"):
            # A hashed name: only the file knows its id.
            try:
                data = self._read(Path(entry.path))
                session_id = None if data is None else data.get("session_id")
            except (ValueError, TypeError):
                session_id = None
            if not isinstance(session_id, str) or _encoded_name(session_id) != stem:
                self._skip_foreign(entry.name, "its name does not match the session it holds")
                return None
            return session_id
        session_id = _decoded_id(stem)
        if session_id is None:
            self._skip_foreign(entry.name, "its name encodes no session id")
        return session_id

    def _iter_ids(self) -> Iterator[str]:
        for entry in os.scandir(self._dir):
            if entry.name.endswith(".json") and not entry.name.startswith(".") and entry.is_file():
                session_id = self._owned_id(entry)
                if session_id is not None:
                    yield session_id

    def _do_write(self, newest: dict[str, SessionSnapshot], deletes: list[str]) -> dict[str, int]:
        """Delete then write files; each file atomically, the batch one file after another."""
        written = 0
        for session_id in deletes:
            try:
                os.unlink(self._path(session_id))
            except FileNotFoundError:
                pass
        for snap in newest.values():
            path = self._path(snap.session_id)
            held = self._read(path)
            if held is not None and int(held.get("version", 0)) >= snap.version:
                continue
            blobs: dict[str, bytes] = {}
            data = stored_snapshot(snap, blobs)
            data["schema_version"] = SCHEMA_VERSION
            self._write_blobs(blobs)  # before the snapshot naming them
            atomic_write(path, json.dumps(data, separators=(",", ":")).encode("utf-8"))
            written += 1
        if deletes or written:
            # One directory fsync makes every rename and unlink of the batch durable.
            _fsync_dir(self._dir)
        return {"sessions": written}

    def _write_blobs(self, blobs: dict[str, bytes]) -> None:
        """Write the blobs not stored yet: a blob is written once, whatever the number of saves naming it."""
        folder = self._dir / _BLOB_DIR
        new = [(sha, data) for sha, data in blobs.items() if not (folder / sha).exists()]
        if not new:
            return
        folder.mkdir(exist_ok=True)
        for sha, data in new:
            atomic_write(folder / sha, data)
        _fsync_dir(folder)

    def _do_load(self, session_id: str) -> SessionSnapshot | None:
        data = self._read(self._path(session_id))
        if data is None:
            return None
        folder = self._dir / _BLOB_DIR
        blobs = {sha: (folder / sha).read_bytes() for sha in blob_refs(data.get("messages", ()))}
        return loaded_snapshot(data, blobs, self._name)

    def _do_list_ids(self) -> list[str]:
        """Every stored session id (temporary, meta and foreign files skipped)."""
        return list(self._iter_ids())

    def data_paths(self) -> tuple[str, ...]:
        """The store's directory."""
        return (os.path.abspath(self._dir),)

    def health_check(self) -> None:
        """Raise :class:`StoreError` unless the directory exists and is writable."""
        if not self._dir.is_dir():
            raise StoreError(f"store {self._name}: the directory does not exist")
        if not os.access(self._dir, os.W_OK):
            raise StoreError(f"store {self._name}: the directory is not writable")

    def close(self) -> None:
        """Nothing to release: every write is complete when ``write_batch`` returns."""
