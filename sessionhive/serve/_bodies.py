"""Request bodies turned into sessionhive values, refusing what the embedded API would refuse.

Unknown keys are refused (a typo must not silently become a default), and a
session's workspace may only name a directory inside the service's own.

A body that is not a well-formed request is a 400 ``InvalidBody`` before any
field is read: not UTF-8 JSON, arrays and objects nested deeper than
:data:`MAX_DEPTH` (found by counting brackets, so a body nested 100,000 deep
never reaches the recursive parser), a number no field could hold (beyond a
signed 64-bit integer, in whatever notation, or ``NaN``/``Infinity``), a lone
UTF-16 surrogate (no response could carry it back), a NUL or control
character in a tool id, a NUL in a path or a path the file system cannot take.
(A session id with one is the Hive's own 400 ``InvalidSessionId``.) A
well-formed body whose value is out of its field's range is a 422
``InvalidConfig`` naming the field.
"""

from __future__ import annotations

import json
import re
from array import array
from dataclasses import fields
from itertools import accumulate
from pathlib import Path
from typing import Any

from sessionhive import (
    ConfirmationPolicy,
    InvalidConfig,
    InvalidSessionId,
    LlmConfig,
    PermissionPolicy,
    PermissionRule,
    SessionConfig,
)
from sessionhive.model.content import Prompt, part_from_dict
from sessionhive.model.ids import check_id
from sessionhive.model.validate import MAX_INT, check_number, check_path, check_positive_number

from .problems import HttpProblem

__all__ = [
    "MAX_DEPTH",
    "llm_config_from_json",
    "parse_json_object",
    "policy_from_json",
    "prompt_from_json",
    "session_config_from_json",
    "tool_id_from_path",
]

MAX_DEPTH = 64

_SESSION_KEYS = frozenset(f.name for f in fields(SessionConfig))
_POLICY_KEYS = frozenset(f.name for f in fields(ConfirmationPolicy))
# api_key is deliberately absent: keys come from the server's environment only.
_LLM_KEYS = frozenset(f.name for f in fields(LlmConfig)) - {"api_key"}
_RULE_KEYS = frozenset(f.name for f in fields(PermissionRule))

# A JSON string, escapes included. The closing quote is optional so that an unterminated string
# matches to the end instead of being retried from every later quote (quadratic backtracking).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# As signed bytes: an opening bracket is +1, a closing one -1 (0xff).
_BRACKET_STEPS = str.maketrans({"[": "\x01", "{": "\x01", "]": "\xff", "}": "\xff"})
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_DIGITS = len(str(MAX_INT))


class _OutOfRange(ValueError):
    """A number in the body that no field can hold."""


def _beyond(text: str) -> _OutOfRange:
    shown = text if len(text) <= 30 else text[:27] + "..."
    return _OutOfRange(
        f"the number {shown} is beyond what any field takes: every number in a body must lie "
        "within the range of a signed 64-bit integer"
    )


def _int_in_range(text: str) -> int:
    # Checked on the digits first: int() of a 100,000-digit string is itself slow work.
    if len(text.lstrip("-")) > _INT_DIGITS or not -MAX_INT - 1 <= (value := int(text)) <= MAX_INT:
        raise _beyond(text)
    return value


def _float_in_range(text: str) -> float | int:
    # The same bound as for an integer: JSON has one number type, and 1e300 is 10**300 written short.
    value = float(text)
    if not -MAX_INT - 1 <= value <= MAX_INT:  # inf included
        raise _beyond(text)
    # 3.0 is the integer 3, as JSON Schema reads it: a count given as 3.0 is a count, not a refusal.
    return int(value) if value.is_integer() else value


def _no_constant(name: str) -> Any:
    raise _OutOfRange(f"{name} is not a JSON number; send a finite number")


def _nests_deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` nests arrays/objects deeper than ``limit``, found without recursion.

    Strings are cut out (a bracket inside one does not count), each opening
    bracket becomes +1 and each closing one -1, and the running sum (computed
    in C by ``accumulate``: 1 MB of brackets in under 70 ms) is the depth.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    steps = array("b", brackets.translate(_BRACKET_STEPS).encode("latin-1"))
    return max(accumulate(steps), default=0) > limit


def _refuse_surrogates(value: Any) -> None:
    """400 if any string (key or value) holds a lone surrogate: it cannot be written as UTF-8."""
    pending = [value]
    while pending:  # a loop, not recursion: the depth is bounded, but a loop needs no bound
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and _SURROGATE.search(item):
            raise HttpProblem(
                400,
                "InvalidBody",
                "the body holds a lone UTF-16 surrogate (\\ud800-\\udfff), not a character",
            )


def parse_json_object(raw: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    if not raw.strip():
        if allow_empty:
            return {}
        raise HttpProblem(400, "InvalidBody", "the request needs a JSON object body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpProblem(
            400, "InvalidBody", f"the body is not UTF-8 (JSON is, RFC 8259): {exc.reason} at byte {exc.start}"
        ) from None
    if _nests_deeper_than(text, MAX_DEPTH):
        raise HttpProblem(
            400, "InvalidBody", f"the body nests arrays and objects deeper than {MAX_DEPTH} levels"
        )
    try:
        value = json.loads(
            text, parse_int=_int_in_range, parse_float=_float_in_range, parse_constant=_no_constant
        )
    except _OutOfRange as exc:
        raise HttpProblem(400, "InvalidBody", str(exc)) from None
    except ValueError as exc:
        raise HttpProblem(400, "InvalidBody", f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HttpProblem(400, "InvalidBody", f"the body must be a JSON object, got {type(value).__name__}")
    _refuse_surrogates(value)
    return value


def prompt_from_json(value: Any, what: str) -> Prompt:
    """A turn's or run's ``prompt``: a string, or an array of content parts (bytes in base64)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise InvalidConfig(f"the {what} body needs a field 'prompt': a string or an array of content parts")
    parts = []
    for index, item in enumerate(value):
        try:
            _check_part_fields(item)
            parts.append(part_from_dict(item))
        except ValueError as exc:
            raise InvalidConfig(f"prompt[{index}]: {exc}") from None
    return parts


# The fields each part type takes over HTTP, all strings (schemas ContentPart in the OpenAPI document).
_PART_FIELDS = {
    "text": frozenset({"type", "text"}),
    "image": frozenset({"type", "media_type", "data", "url"}),
    "file": frozenset({"type", "media_type", "data", "path", "name"}),
}


def _check_part_fields(item: Any) -> None:
    """ValueError unless ``item`` is a part object with only its type's fields, each a string."""
    if not isinstance(item, dict):
        raise ValueError(f"a content part must be a JSON object, got {type(item).__name__}")
    allowed = _PART_FIELDS.get(item.get("type"))  # type: ignore[arg-type]
    if allowed is None:
        raise ValueError(f"content part type must be one of {sorted(_PART_FIELDS)}, got {item.get('type')!r}")
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ValueError(
            f"a {item['type']} part takes no field {unknown[0]!r}; its fields: {sorted(allowed)}"
        )
    for key, field in item.items():
        if not isinstance(field, str):
            raise ValueError(f"field {key!r} of a content part must be a string, got {type(field).__name__}")


def tool_id_from_path(tool_id: str) -> str:
    """The tool id of a confirmation route, held to the id rule: no NUL or other control character."""
    try:
        return check_id(tool_id, "tool id")
    except InvalidSessionId as exc:
        raise HttpProblem(400, "InvalidBody", str(exc)) from None


def _check_keys(data: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidConfig(f"{what} has unknown field(s) {unknown}; known: {sorted(allowed)}")


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidConfig(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def policy_from_json(value: Any) -> ConfirmationPolicy:
    data = _object(value, "confirmation policy")
    _check_keys(data, _POLICY_KEYS, "confirmation policy")
    required = data.get("require_confirmation")
    if required is not None and required != "all" and not isinstance(required, list):
        raise InvalidConfig("require_confirmation must be 'all' or a list of tool names")
    try:
        return ConfirmationPolicy.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise InvalidConfig(f"invalid confirmation policy: {exc}") from None


def llm_config_from_json(value: Any) -> LlmConfig:
    data = _object(value, "model_config")
    if "api_key" in data:
        raise InvalidConfig(
            "model_config.api_key is not accepted over HTTP; set OPENAI_API_KEY / ANTHROPIC_API_KEY "
            "in the service's environment"
        )
    _check_keys(data, _LLM_KEYS, "model_config")
    _check_llm_fields(data)
    try:
        return LlmConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise InvalidConfig(f"invalid model_config: {exc}") from None


def session_config_from_json(value: Any, workspace_root: Path | None) -> SessionConfig | None:
    if value is None:
        return None
    data = _object(value, "config")
    _check_keys(data, _SESSION_KEYS, "config")
    workspace = data.get("workspace")
    if workspace is not None:
        if workspace_root is None:
            raise InvalidConfig("this service does not let a session choose its workspace")
        data = {**data, "workspace": _workspace_inside(workspace, workspace_root)}
    if data.get("metadata") is not None:
        _object(data["metadata"], "config.metadata")
    if data.get("confirmation_policy") is not None:
        policy_from_json(data["confirmation_policy"])  # the precise error for a bad policy
    if data.get("task_child_config") is not None:
        # The children's config passes the same checks (its workspace inside the service's too).
        child = session_config_from_json(data["task_child_config"], workspace_root)
        data = {**data, "task_child_config": child.to_dict() if child is not None else None}
    try:
        if data.get("permission_policy") is not None:
            _permission_policy(data["permission_policy"])
        return SessionConfig.from_dict(data)
    except InvalidConfig:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidConfig(f"invalid session config: {exc}") from None


def _check_llm_fields(data: dict[str, Any]) -> None:
    """What LlmConfig leaves open: a string endpoint, a temperature providers take, a timeout a socket can."""
    if data.get("base_url") is not None and not isinstance(data["base_url"], str):
        raise InvalidConfig(f"model_config.base_url must be a URL string or null, got {data['base_url']!r}")
    if data.get("temperature") is not None:
        check_number("model_config.temperature", data["temperature"], maximum=2.0)
    if "timeout_s" in data:
        check_positive_number("model_config.timeout_s", data["timeout_s"], unit="seconds")


def _workspace_inside(workspace: Any, workspace_root: Path) -> str:
    """``workspace`` resolved inside ``workspace_root`` and created; a NUL or overlong path is a 400."""
    if not isinstance(workspace, str) or not workspace:
        raise InvalidConfig("config.workspace must be a non-empty path")
    try:
        check_path("config.workspace", workspace)
        resolved = (workspace_root / workspace).resolve()
        check_path("config.workspace inside the service's workspace", str(resolved))
    except InvalidConfig as exc:
        raise HttpProblem(400, "InvalidBody", str(exc)) from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, before Python 3.13
        raise InvalidConfig(f"config.workspace {workspace!r} cannot be resolved: {exc}") from None
    if resolved != workspace_root and workspace_root not in resolved.parents:
        raise InvalidConfig(f"config.workspace {workspace!r} is outside the service's workspace")
    try:
        resolved.mkdir(parents=True, exist_ok=True)  # inside the service's own workspace: safe to create
    except OSError as exc:
        raise InvalidConfig(f"config.workspace {workspace!r} cannot be created: {exc.strerror}") from None
    return str(resolved)


def _permission_policy(value: Any) -> PermissionPolicy:
    """A permission policy whose rules hold strings only: a number as a glob would fail mid-turn."""
    data = _object(value, "permission_policy")
    _check_keys(data, frozenset(("rules",)), "permission_policy")
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise InvalidConfig("permission_policy.rules must be a list of rules")
    for rule in rules:
        rule = _object(rule, "a permission rule")
        _check_keys(rule, _RULE_KEYS, "a permission rule")
        for key, text in rule.items():
            if not isinstance(text, str) and not (text is None and key in ("pattern", "argument")):
                raise InvalidConfig(f"permission rule field {key!r} must be a string, got {text!r}")
    return PermissionPolicy.from_dict(data)
