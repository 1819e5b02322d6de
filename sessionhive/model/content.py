"""Content parts: what a message holds besides plain text (images, PDFs, workspace files).

A prompt is either a string or a sequence of parts (:data:`Prompt`). A
message that holds parts keeps their text in ``Message.text`` too, so that
callers reading text alone see what they always saw.

Bytes travel as base64 in JSON (``data``); a store keeps large ones once,
as blobs named by their sha256 (``blob`` in the stored JSON, see
:mod:`sessionhive.persistence.blobs`), and a part read back from a store has
its bytes again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = [
    "BASE64_PATTERN",
    "FILE_MEDIA_TYPES",
    "IMAGE_MEDIA_TYPES",
    "ContentPart",
    "FilePart",
    "ImagePart",
    "Prompt",
    "TextPart",
    "decode_b64",
    "part_bytes",
    "part_from_dict",
    "parts_text",
]

#: The image types both OpenAI and Anthropic accept.
IMAGE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: The document types a :class:`FilePart` may carry (what both providers read as a document).
FILE_MEDIA_TYPES = frozenset({"application/pdf", "text/plain"})


#: What :func:`decode_b64` accepts: standard base64 with its padding (the OpenAPI document uses it too).
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_BASE64 = re.compile(BASE64_PATTERN)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_b64(value: Any, what: str) -> bytes:
    """``value`` (base64 text) as bytes; ``ValueError`` naming ``what`` when it is not base64."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be base64 text, got {type(value).__name__}")
    if not _BASE64.fullmatch(value):
        raise ValueError(f"{what} is not valid base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class TextPart:
    """Plain text."""

    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextPart:
        return cls(str(data.get("text", "")))


@dataclass(frozen=True)
class ImagePart:
    """An image: ``data`` with its ``media_type`` (``image/png``...), or a ``url`` the provider fetches."""

    data: bytes | None = None
    media_type: str | None = None
    url: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data or b"").hexdigest()

    def data_url(self) -> str:
        """The image as the provider reads it: its URL, or a ``data:`` URL of its bytes."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{_b64(self.data or b'')}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "image"}
        if self.url is not None:
            data["url"] = self.url
        if self.media_type is not None:
            data["media_type"] = self.media_type
        if self.data is not None:
            data["data"] = _b64(self.data)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagePart:
        raw = data.get("data")
        return cls(
            data=None if raw is None else decode_b64(raw, "image data"),
            media_type=data.get("media_type"),
            url=data.get("url"),
        )


@dataclass(frozen=True)
class FilePart:
    """A document: ``data`` with its ``media_type`` (a PDF), or a workspace file by relative ``path``.

    A ``path`` is read from the session's workspace (never outside it) when
    the session accepts the turn; the message it stores holds the bytes, with
    the path kept as the file's ``name``.
    """

    data: bytes | None = None
    media_type: str = "application/pdf"
    path: str | None = None
    name: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data or b"").hexdigest()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "file", "media_type": self.media_type}
        if self.path is not None:
            data["path"] = self.path
        if self.name is not None:
            data["name"] = self.name
        if self.data is not None:
            data["data"] = _b64(self.data)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FilePart:
        raw = data.get("data")
        return cls(
            data=None if raw is None else decode_b64(raw, "file data"),
            media_type=str(data.get("media_type") or "application/pdf"),
            path=data.get("path"),
            name=data.get("name"),
        )


ContentPart: TypeAlias = TextPart | ImagePart | FilePart
#: What ``generate`` takes: text, or a sequence of parts.
Prompt: TypeAlias = str | Sequence[ContentPart]

_PART_TYPES: dict[str, type[TextPart] | type[ImagePart] | type[FilePart]] = {
    "text": TextPart,
    "image": ImagePart,
    "file": FilePart,
}


def part_from_dict(data: dict[str, Any]) -> ContentPart:
    """The part ``data`` describes (its ``type`` is ``text``, ``image`` or ``file``); ValueError otherwise."""
    if not isinstance(data, dict):
        raise ValueError(f"a content part must be a JSON object, got {type(data).__name__}")
    kind = _PART_TYPES.get(str(data.get("type")))
    if kind is None:
        raise ValueError(f"content part type must be one of {sorted(_PART_TYPES)}, got {data.get('type')!r}")
    return kind.from_dict(data)


def parts_text(parts: Sequence[ContentPart]) -> str:
    """The text of ``parts``: their text parts joined by blank lines (what ``Message.text`` holds)."""
    return "\n\n".join(part.text for part in parts if isinstance(part, TextPart))


def part_bytes(part: ContentPart) -> int:
    """How many bytes of binary data ``part`` holds (0 for text and URLs)."""
    if isinstance(part, TextPart) or part.data is None:
        return 0
    return len(part.data)
