"""Request bodies turned into sessionhive values, refusing what the embedded API would refuse.

Unknown keys are refused (a typo must not silently become a default), and a
session's workspace may only name a directory inside the service's own.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from sessionhive import ConfirmationPolicy, InvalidConfig, LlmConfig, PermissionPolicy, SessionConfig

from ._problems import HttpProblem

__all__ = ["llm_config_from_json", "parse_json_object", "policy_from_json", "session_config_from_json"]

_SESSION_KEYS = frozenset(f.name for f in fields(SessionConfig))
_POLICY_KEYS = frozenset(f.name for f in fields(ConfirmationPolicy))
# api_key is deliberately absent: keys come from the server's environment only.
_LLM_KEYS = frozenset(f.name for f in fields(LlmConfig)) - {"api_key"}


def parse_json_object(raw: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    if not raw.strip():
        if allow_empty:
            return {}
        raise HttpProblem(400, "InvalidBody", "the request needs a JSON object body")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpProblem(400, "InvalidBody", f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HttpProblem(400, "InvalidBody", f"the body must be a JSON object, got {type(value).__name__}")
    return value


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
        if not isinstance(workspace, str) or not workspace:
            raise InvalidConfig("config.workspace must be a non-empty path")
        resolved = (workspace_root / workspace).resolve()
        if resolved != workspace_root and workspace_root not in resolved.parents:
            raise InvalidConfig(f"config.workspace {workspace!r} is outside the service's workspace")
        resolved.mkdir(parents=True, exist_ok=True)  # inside the service's own workspace: safe to create
        data = {**data, "workspace": str(resolved)}
    if data.get("confirmation_policy") is not None:
        policy_from_json(data["confirmation_policy"])  # the precise error for a bad policy
    try:
        if data.get("permission_policy") is not None:
            PermissionPolicy.from_dict(_object(data["permission_policy"], "permission_policy"))
        return SessionConfig.from_dict(data)
    except InvalidConfig:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidConfig(f"invalid session config: {exc}") from None
