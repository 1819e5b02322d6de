"""Large binary content parts stored once, as blobs named by their sha256.

A message's image or file bytes past :data:`BLOB_THRESHOLD` are not kept in
the message's stored JSON (where every snapshot of a file store, and every
rewrite of a compacted history, would encode them again): the stored part
names its blob (``"blob": <sha256 hex>``) and the store keeps the bytes once,
in its blob table or directory, whatever number of messages, sessions and
saves refer to them. Loading puts the bytes back into the part.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from sessionhive.model.content import ContentPart, TextPart, part_from_dict
from sessionhive.model.errors import StoreError
from sessionhive.model.messages import Message
from sessionhive.persistence.snapshot import SessionSnapshot

__all__ = [
    "BLOB_THRESHOLD",
    "blob_refs",
    "loaded_message",
    "loaded_snapshot",
    "stored_payload",
    "stored_snapshot",
]

#: Bytes above which a part's data is stored as a blob (smaller ones stay inline: one read, no join).
BLOB_THRESHOLD = 4096


def stored_payload(message: Message, blobs: dict[str, bytes]) -> dict[str, Any]:
    """``message`` as the JSON a store keeps, its large parts' bytes moved into ``blobs`` (by sha256)."""
    if not message.parts:
        return message.to_dict()
    data = dataclasses.replace(message, parts=()).to_dict()
    data["parts"] = [_stored_part(part, blobs) for part in message.parts]
    return data


def _stored_part(part: ContentPart, blobs: dict[str, bytes]) -> dict[str, Any]:
    if isinstance(part, TextPart) or part.data is None or len(part.data) <= BLOB_THRESHOLD:
        return part.to_dict()
    sha = hashlib.sha256(part.data).hexdigest()
    blobs[sha] = part.data
    stored = dataclasses.replace(part, data=None).to_dict()
    stored["blob"] = sha
    return stored


def blob_refs(payloads: Iterable[Mapping[str, Any]]) -> set[str]:
    """The blobs the stored messages ``payloads`` refer to."""
    return {
        str(part["blob"]) for payload in payloads for part in payload.get("parts") or () if "blob" in part
    }


def loaded_message(payload: Mapping[str, Any], blobs: Mapping[str, bytes], store_name: str) -> Message:
    """The message ``payload`` stores, with its blobs' bytes back in its parts."""
    if not payload.get("parts"):
        return Message.from_dict(dict(payload))
    parts: list[ContentPart] = []
    for stored in payload["parts"]:
        part = part_from_dict(stored)
        sha = stored.get("blob")
        if sha is not None and not isinstance(part, TextPart):
            data = blobs.get(sha)
            if data is None:
                raise StoreError(f"store {store_name} lacks blob {sha} of a stored message")
            part = dataclasses.replace(part, data=data)
        parts.append(part)
    message = Message.from_dict({**payload, "parts": ()})
    return dataclasses.replace(message, parts=tuple(parts))


def stored_snapshot(snap: SessionSnapshot, blobs: dict[str, bytes]) -> dict[str, Any]:
    """``snap`` as the JSON document a whole-snapshot store keeps, its large parts moved into ``blobs``."""
    data = snap.header_dict()
    data["messages"] = [stored_payload(message, blobs) for message in snap.messages]
    return data


def loaded_snapshot(data: dict[str, Any], blobs: Mapping[str, bytes], store_name: str) -> SessionSnapshot:
    """The snapshot a :func:`stored_snapshot` document holds, its blobs' bytes back in its parts."""
    messages = tuple(loaded_message(payload, blobs, store_name) for payload in data.get("messages", ()))
    return SessionSnapshot.from_dict(data, messages)
