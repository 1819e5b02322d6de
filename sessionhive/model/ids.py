"""Validation of session ids, shared by every entry point."""

from __future__ import annotations

import unicodedata

from sessionhive.model.errors import InvalidSessionId

__all__ = ["MAX_ID_LENGTH", "check_id"]

MAX_ID_LENGTH = 256


def check_id(session_id: object, what: str = "session id") -> str:
    """Return ``session_id`` if it is a usable id, else raise :class:`InvalidSessionId`.

    An id is a non-empty string of at most :data:`MAX_ID_LENGTH` characters
    without control characters and without leading or trailing whitespace:
    ids end up in file names, URLs, logs and SQL keys.
    """
    if not isinstance(session_id, str):
        raise InvalidSessionId(f"{what} must be a string, got {type(session_id).__name__}")
    if not session_id:
        raise InvalidSessionId(f"{what} must not be empty")
    if len(session_id) > MAX_ID_LENGTH:
        raise InvalidSessionId(f"{what} is {len(session_id)} characters long; the limit is {MAX_ID_LENGTH}")
    if session_id != session_id.strip():
        raise InvalidSessionId(f"{what} {session_id!r} has leading or trailing whitespace")
    for char in session_id:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            raise InvalidSessionId(f"{what} {session_id!r} contains the control character {char!r}")
    return session_id
