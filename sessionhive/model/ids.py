"""Validation of session ids, shared by every entry point, and the same rule as a regular expression."""

from __future__ import annotations

import functools
import sys
import unicodedata

from sessionhive.model.errors import InvalidSessionId

__all__ = ["MAX_ID_LENGTH", "check_id", "id_pattern"]

MAX_ID_LENGTH = 256
# Control, format, surrogate and line/paragraph separator characters: invisible in a log line,
# a file name or a URL, or able to break one.
_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))


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
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise InvalidSessionId(f"{what} {session_id!r} contains the control character {char!r}")
    return session_id


@functools.cache
def id_pattern() -> str:
    """:func:`check_id`'s rule, less the length, as a regular expression (for the OpenAPI document).

    Built from this interpreter's Unicode database, as :func:`check_id` is, so
    the two agree character for character. Code points below U+10000 are
    written as ``\\uXXXX`` escapes (the surrogates among them could not be
    written as UTF-8), the few above as themselves, which both Python's ``re``
    and ECMA-262 regular expressions read.
    """
    category, refused_categories = unicodedata.category, _REFUSED_CATEGORIES  # locals: 1.1M lookups
    refused = [c for c in range(sys.maxunicode + 1) if category(chr(c)) in refused_categories]
    # str.strip() removes exactly the characters for which isspace() is true; all lie below U+3001.
    space = [c for c in range(0x3001) if chr(c).isspace()]
    inner = _char_class(refused)
    edge = _char_class(sorted(set(refused) | set(space)))
    return f"^[^{edge}](?:[^{inner}]*[^{edge}])?$"


def _char_class(code_points: list[int]) -> str:
    """The body of a regex character class holding ``code_points`` (sorted), as ranges."""
    parts: list[str] = []
    start = previous = code_points[0]
    for code_point in [*code_points[1:], -1]:
        if code_point == previous + 1:
            previous = code_point
            continue
        parts.append(_escaped(start) if start == previous else f"{_escaped(start)}-{_escaped(previous)}")
        start = previous = code_point
    return "".join(parts)


def _escaped(code_point: int) -> str:
    return f"\\u{code_point:04x}" if code_point <= 0xFFFF else chr(code_point)
