"""Argument checks written once: an int that is not a bool, a finite real number, a path, in range.

Every constructor that takes a count, a duration or a path from a user
checks it here, so that ``True`` is never accepted as ``1``, ``nan`` never as
a timeout, a NUL byte never reaches the file system, and the error always
names the argument and the value given.

Nothing is unbounded: an integer must fit the store's signed 64-bit columns
(:data:`MAX_INT`), a duration in seconds is at most :data:`MAX_SECONDS`, a
path at most :data:`MAX_PATH_BYTES` with components of at most
:data:`MAX_NAME_BYTES`. Past those, the error comes here, at construction,
instead of as an ``OverflowError`` or ``OSError`` from deep inside a turn.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

from sessionhive.model.content import (
    FILE_MEDIA_TYPES,
    IMAGE_MEDIA_TYPES,
    ContentPart,
    FilePart,
    ImagePart,
    TextPart,
    part_bytes,
    parts_text,
)
from sessionhive.model.errors import InvalidConfig

__all__ = [
    "MAX_INT",
    "MAX_NAME_BYTES",
    "MAX_PART_BYTES",
    "MAX_PATH_BYTES",
    "MAX_SECONDS",
    "WORKSPACE_PATH_PATTERN",
    "check_confirm_arguments",
    "check_instance",
    "check_int",
    "check_number",
    "check_path",
    "check_positive_int",
    "check_positive_number",
    "check_prompt",
]

# What a signed 64-bit column (SQLite INTEGER, PostgreSQL BIGINT) holds.
MAX_INT = 2**63 - 1
# 30 days: longer than any wait for a person or a model call, and far inside every OS timer
# (threading's TIMEOUT_MAX, a socket's timeval); 1e300 seconds would overflow them mid-turn.
MAX_SECONDS = 30 * 24 * 3600.0
# Linux's PATH_MAX and NAME_MAX: longer paths fail in open()/mkdir() with ENAMETOOLONG.
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
# One component of a workspace path: anything but "", "..", a "/" or a NUL.
_COMPONENT = r"(?:[^/\x00.][^/\x00]*|\.|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+)"
#: A path a prompt may name in its workspace: relative, no ``..`` component, no empty one, no NUL
#: (the OpenAPI document uses it too).
WORKSPACE_PATH_PATTERN = rf"^{_COMPONENT}(?:/{_COMPONENT})*$"
_WORKSPACE_PATH = re.compile(WORKSPACE_PATH_PATTERN)
#: The largest image or file one content part may carry (OpenAI's and Anthropic's limits are of this order).
MAX_PART_BYTES = 20 * 1024 * 1024


def check_int(name: str, value: Any, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) within ``[minimum, maximum]``; else InvalidConfig.

    ``name`` is how the caller spells the argument (``"SessionConfig.max_tool_rounds"``).
    """
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        bound = f">= {minimum}" if maximum == MAX_INT else f"in [{minimum}, {maximum}]"
        limit = " (and below 2**63)" if maximum == MAX_INT else ""
        raise InvalidConfig(f"{name} must be an integer {bound}{limit}, got {value!r}")
    return value


def check_instance(name: str, value: object, kind: type, *, optional: bool = False) -> None:
    """InvalidConfig unless ``value`` is a ``kind`` (or ``None``, when ``optional``).

    The facades' argument checks (``config``, ``policy``, ``prompt``), written
    once so every facade refuses the same values with the same words:

    >>> check_instance("prompt", 3, str)
    Traceback (most recent call last):
    ...
    sessionhive.model.errors.InvalidConfig: prompt must be a string, got int
    """
    if (value is None and optional) or isinstance(value, kind):
        return
    wanted = "a string" if kind is str else f"a {kind.__name__}"
    raise InvalidConfig(
        f"{name} must be {wanted}{' or None' if optional else ''}, got {type(value).__name__}"
    )


def check_positive_int(name: str, value: Any) -> int:
    """``value`` if it is an ``int`` >= 1 (not a ``bool``); else InvalidConfig."""
    return check_int(name, value, minimum=1)


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float = 0.0,
    exclusive_minimum: bool = False,
    maximum: float | None = None,
    unit: str = "",
) -> float:
    """``value`` as a float if it is a finite real number (not a ``bool``) in range; else InvalidConfig.

    The range is ``[minimum, maximum]``, or ``(minimum, maximum]`` with
    ``exclusive_minimum``. With ``unit="seconds"`` and no ``maximum``, the
    maximum is :data:`MAX_SECONDS`. ``unit`` otherwise only words the error.
    """
    if maximum is None and unit == "seconds":
        maximum = MAX_SECONDS
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > minimum if exclusive_minimum else value >= minimum) and (
            maximum is None or value <= maximum
        )
    if not ok:
        low = f"> {_shown(minimum)}" if exclusive_minimum else f">= {_shown(minimum)}"
        bound = low if maximum is None else f"{low} and <= {_shown(maximum)}"
        suffix = f" {unit}" if unit else ""
        raise InvalidConfig(f"{name} must be a finite number {bound}{suffix}, got {value!r}")
    return float(value)


def _shown(bound: float) -> str:
    """A bound as a person writes it: 2592000, not 2.592e+06; 0.5 as 0.5."""
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else f"{bound:g}"


def check_positive_number(name: str, value: Any, *, unit: str = "") -> float:
    """``value`` as a float if it is a finite real number > 0 (not a ``bool``); else InvalidConfig."""
    return check_number(name, value, minimum=0.0, exclusive_minimum=True, unit=unit)


def check_path(name: str, value: Any) -> str:
    """``value`` if it is a non-empty path string the file system can take; else InvalidConfig.

    Refused: a NUL byte (``open()`` raises ``ValueError: embedded null byte``),
    characters the file system encoding cannot hold, more than
    :data:`MAX_PATH_BYTES` in all or :data:`MAX_NAME_BYTES` in one component.
    """
    if not isinstance(value, str) or not value:
        raise InvalidConfig(f"{name} must be a non-empty path, got {value!r}")
    if "\0" in value:
        raise InvalidConfig(f"{name} must not contain a NUL character, got {value!r}")
    try:
        encoded = os.fsencode(value)
    except UnicodeEncodeError:
        raise InvalidConfig(f"{name} holds characters no file name can: {value!r}") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidConfig(f"{name} is {len(encoded)} bytes long; the limit is {MAX_PATH_BYTES}")
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > MAX_NAME_BYTES:
        raise InvalidConfig(
            f"{name} has a component of {len(longest)} bytes ({longest[:40]!r}...); "
            f"the limit is {MAX_NAME_BYTES}"
        )
    return value


def check_confirm_arguments(tool_id: object, approved: object, reason: object, decided_by: object) -> None:
    """InvalidConfig unless ``confirm_tool``'s arguments mean one thing: ``approved`` is a bool.

    ``confirm_tool(sid, tool_id, "no")`` would otherwise approve (``bool("no")``).
    """
    if not isinstance(tool_id, str) or not tool_id:
        raise InvalidConfig("tool_id must be the non-empty id from a ConfirmationRequired event")
    if not isinstance(approved, bool):
        raise InvalidConfig(f"approved must be True or False, got {approved!r}")
    check_instance("reason", reason, str, optional=True)
    check_instance("decided_by", decided_by, str, optional=True)


def check_prompt(prompt: Any) -> tuple[str, tuple[ContentPart, ...]]:
    """A prompt as ``(text, parts)``: a string is its own text with no parts; else InvalidConfig.

    A sequence of parts must hold at least one; an image carries bytes of a
    known image type (``IMAGE_MEDIA_TYPES``) or an http(s)/data URL; a file
    carries bytes of a known document type or a relative workspace path that
    stays inside the workspace; no part holds more than :data:`MAX_PART_BYTES`.
    The text of a prompt of parts is the text of its text parts.
    """
    if isinstance(prompt, str):
        return prompt, ()
    if isinstance(prompt, bytes | bytearray) or not isinstance(prompt, Sequence):
        raise InvalidConfig(
            f"prompt must be a string or a sequence of content parts, got {type(prompt).__name__}"
        )
    parts = tuple(prompt)
    if not parts:
        raise InvalidConfig("prompt must hold at least one content part, got an empty sequence")
    for index, part in enumerate(parts):
        _check_part(f"prompt[{index}]", part)
    return parts_text(parts), parts


def _check_part(name: str, part: object) -> None:
    if isinstance(part, TextPart):
        check_instance(f"{name}.text", part.text, str)
        return
    if not isinstance(part, ImagePart | FilePart):
        raise InvalidConfig(f"{name} must be a TextPart, ImagePart or FilePart, got {type(part).__name__}")
    size = part_bytes(part)
    if size > MAX_PART_BYTES:
        raise InvalidConfig(f"{name} holds {size} bytes; the limit of one part is {MAX_PART_BYTES}")
    if isinstance(part, ImagePart):
        if (part.data is None) == (part.url is None):
            raise InvalidConfig(f"{name} must carry either data (bytes with a media_type) or a url, not both")
        if part.data is not None:
            _check_bytes(name, part.data, part.media_type, IMAGE_MEDIA_TYPES)
        elif not isinstance(part.url, str) or not part.url.startswith(("https://", "http://", "data:image/")):
            raise InvalidConfig(f"{name}.url must be an http(s) or data:image/ URL, got {part.url!r}")
        elif part.media_type is not None and part.media_type not in IMAGE_MEDIA_TYPES:
            raise InvalidConfig(
                f"{name}.media_type must be one of {sorted(IMAGE_MEDIA_TYPES)}, got {part.media_type!r}"
            )
        return
    if (part.data is None) == (part.path is None):
        raise InvalidConfig(f"{name} must carry either data (bytes with a media_type) or a workspace path")
    if part.data is not None:
        _check_bytes(name, part.data, part.media_type, FILE_MEDIA_TYPES)
        return
    check_workspace_path(f"{name}.path", part.path)
    if part.media_type not in FILE_MEDIA_TYPES:
        raise InvalidConfig(
            f"{name}.media_type must be one of {sorted(FILE_MEDIA_TYPES)}, got {part.media_type!r}"
        )


def _check_bytes(name: str, data: object, media_type: object, known: frozenset[str]) -> None:
    if not isinstance(data, bytes):
        raise InvalidConfig(f"{name}.data must be bytes, got {type(data).__name__}")
    if media_type not in known:
        raise InvalidConfig(f"{name}.media_type must be one of {sorted(known)}, got {media_type!r}")


def check_workspace_path(name: str, value: Any) -> str:
    """``value`` if it matches :data:`WORKSPACE_PATH_PATTERN` (inside its folder); else InvalidConfig."""
    path = check_path(name, value)
    if not _WORKSPACE_PATH.fullmatch(path):
        raise InvalidConfig(
            f"{name} must be a path inside the session's workspace (relative, without '..' "
            f"or empty components), got {path!r}"
        )
    return path
