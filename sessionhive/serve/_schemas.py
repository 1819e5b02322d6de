"""The JSON schemas of the /v1 API: request bodies, results and the pieces routes declare theirs with.

Request schemas say what the server accepts, no more: a body they refuse is
refused (400 or 422), and a body they accept is not refused for its shape.
schemathesis (tests/test_serve_fuzz.py) holds the server to both.
"""

from __future__ import annotations

from typing import Any, get_args

from sessionhive.model.content import BASE64_PATTERN, FILE_MEDIA_TYPES, IMAGE_MEDIA_TYPES
from sessionhive.model.ids import MAX_ID_LENGTH, id_pattern
from sessionhive.model.llm_config import PROVIDERS
from sessionhive.model.runs import MAX_IDEMPOTENCY_KEY_LENGTH, OnBusy, RunStatus
from sessionhive.model.validate import MAX_INT, MAX_PATH_BYTES, MAX_SECONDS, WORKSPACE_PATH_PATTERN

__all__ = [
    "ALWAYS",
    "BODY",
    "BOOL",
    "ID_LIST",
    "INT",
    "MAX_OFFSET",
    "MAX_PAGE",
    "MODEL",
    "PAGE",
    "PAGE_PARAMS",
    "QUOTA",
    "RESUME_PARAMS",
    "RUN",
    "RUN_PARAMS",
    "RUN_START",
    "SCHEMAS",
    "SESSION",
    "STATE",
    "STRING",
    "id_schema",
    "merge",
    "nullable",
    "obj",
    "ref",
]

# The paging bounds of list and history (the server refuses others with a 400).
MAX_PAGE = 1000
MAX_OFFSET = 1 << 62

INT64 = {"minimum": -MAX_INT - 1, "maximum": MAX_INT}
NULL = {"type": "null"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, NULL]}


def id_schema(what: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_LENGTH,
        "pattern": id_pattern(),
        "description": f"{what}: no control characters, no leading or trailing whitespace",
    }


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_BASE64 = {"type": "string", "pattern": BASE64_PATTERN, "contentEncoding": "base64"}
_IMAGE_TYPES = {"enum": sorted(IMAGE_MEDIA_TYPES)}
_FILE_TYPES = {"enum": sorted(FILE_MEDIA_TYPES)}
_IMAGE_URL = {
    "type": "string",
    "pattern": "^(https?://|data:image/)",
    "description": "fetched by the provider",
}
_WORKSPACE_PATH = {
    "type": "string",
    "pattern": WORKSPACE_PATH_PATTERN,
    "description": "relative to the session's workspace; a missing file, or a symlink out of it, is a 422",
}


def _part(kind: str, fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """One shape of a content part: its ``type``, its fields, no others."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, **fields},
    }


OUTPUT_SCHEMA = nullable(
    {
        "type": "object",
        "additionalProperties": ref("JsonValue"),
        "description": "a JSON Schema the final answer must match (structured output): the model is "
        "asked in its native JSON mode, one repair round, else 502 OutputInvalid",
    }
)
OUTPUT = {
    "anyOf": [ref("JsonValue"), NULL],
    "description": "the validated structured output of a turn run with output_schema, else null",
}


SCHEMAS: dict[str, Any] = {
    "CreateSession": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": id_schema("the new session's id"),
            "config": nullable(ref("SessionConfig")),
            "exist_ok": {"type": "boolean", "description": "get or create: 200 whether it existed or not"},
        },
        "additionalProperties": ref("JsonValue"),
    },
    "JsonValue": {
        "description": "any JSON value nested at most 64 deep whose numbers fit a signed 64-bit integer's "
        "range (the bound of every body, 400 InvalidBody past it)",
        "anyOf": [
            {"type": ["string", "boolean", "null"]},
            {"type": "number", **INT64},
            {"type": "array", "items": ref("JsonValue")},
            {"type": "object", "additionalProperties": ref("JsonValue")},
        ],
    },
    "SessionConfig": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "system_prompt": {"type": ["string", "null"]},
            "workspace": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": MAX_PATH_BYTES,
                "pattern": "^[^\\u0000]*$",
                "description": "a directory inside the service's workspace (created if missing); "
                "a NUL or a path too long is a 400, a path outside the workspace a 422",
            },
            "max_context_length": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
            "auto_compact": {"type": "boolean"},
            "auto_compact_threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "confirmation_policy": nullable(ref("ConfirmationPolicy")),
            "permission_policy": nullable(ref("PermissionPolicy")),
            "storage": {"enum": ["default", "memory"]},
            "durability": {"enum": ["durable", "batched", "sync"]},
            "max_tool_rounds": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
            "allow_network": {"type": "boolean"},
            "resume_interrupted": {"type": "boolean"},
            "max_content_bytes": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
            "metadata": nullable({"type": "object", "additionalProperties": ref("JsonValue")}),
            "task_tool": {"type": "boolean", "description": "offer the model the built-in task tool"},
            "task_max_depth": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
            "task_max_per_turn": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
            "task_child_config": nullable(ref("SessionConfig")),
        },
    },
    "ConfirmationPolicy": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "require_confirmation": {
                "oneOf": [{"const": "all"}, {"type": "array", "items": {"type": "string", "minLength": 1}}]
            },
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
            "on_timeout": {"enum": ["reject", "approve"]},
        },
    },
    "PermissionPolicy": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["action"],
                    "properties": {
                        "action": {"enum": ["allow", "deny", "ask"]},
                        "tool": {"type": "string", "minLength": 1, "description": "a glob; default *"},
                        "pattern": {"type": ["string", "null"]},
                        "argument": {"type": ["string", "null"]},
                    },
                },
            }
        },
    },
    "Turn": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": ref("Prompt"),
            "on_busy": ref("OnBusy"),
            "output_schema": OUTPUT_SCHEMA,
        },
        "additionalProperties": ref("JsonValue"),
    },
    "StartRun": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": ref("Prompt"),
            "on_busy": ref("OnBusy"),
            "output_schema": OUTPUT_SCHEMA,
            "webhook": nullable(
                {
                    "type": "object",
                    "required": ["url"],
                    "properties": {"url": {"type": "string"}},
                    "additionalProperties": False,
                    "description": "POSTed the finished run; the URL must start with one of the "
                    "service's --allow-webhook-url prefixes (else 403 WebhookNotAllowed)",
                }
            ),
        },
        "additionalProperties": ref("JsonValue"),
    },
    "Prompt": {
        "description": "text, or an array of content parts; the whole body stays within the service's "
        "body limit (--max-body), so large images travel base64-encoded within it",
        "oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": ref("ContentPart")}],
    },
    "ContentPart": {
        "description": "text; an image as base64 bytes with their media type, or by URL; a document "
        "as base64 bytes (application/pdf unless named), or a file of the session's workspace by path",
        "oneOf": [
            _part("text", {"text": {"type": "string"}}, []),
            _part("image", {"media_type": _IMAGE_TYPES, "data": _BASE64}, ["media_type", "data"]),
            _part("image", {"url": _IMAGE_URL, "media_type": _IMAGE_TYPES}, ["url"]),
            _part("file", {"data": _BASE64, "media_type": _FILE_TYPES, "name": {"type": "string"}}, ["data"]),
            _part(
                "file",
                {"path": _WORKSPACE_PATH, "media_type": _FILE_TYPES, "name": {"type": "string"}},
                ["path"],
            ),
        ],
    },
    "OnBusy": {
        "enum": list(get_args(OnBusy)),
        "description": "when the session runs a turn already: enqueue (default), reject (409 "
        "SessionBusy), interrupt or rollback the running turn",
    },
    "Configure": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "thinking": {"type": ["boolean", "null"]},
            "budget": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_INT},
            "model_config": nullable(ref("ModelConfig")),
        },
    },
    "ModelConfig": {
        "type": "object",
        "additionalProperties": False,
        "required": ["provider", "model"],
        "description": "api_key is refused: keys come from the service's environment; a base_url outside "
        "the operator's --base-url and --allow-base-url prefixes is a 403 BaseUrlNotAllowed",
        "properties": {
            "provider": {"enum": list(PROVIDERS)},
            "model": {"type": "string", "minLength": 1},
            "base_url": {"type": ["string", "null"]},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
            "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
        },
    },
    "Confirmation": {
        "type": "object",
        "required": ["approved"],
        "properties": {"approved": {"type": "boolean"}, "reason": {"type": ["string", "null"]}},
        "additionalProperties": ref("JsonValue"),
    },
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; `error` names the sessionhive exception class",
        "required": ["type", "title", "status", "detail", "error"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "error": {"type": "string"},
            "session_id": {"type": "string"},
        },
    },
}


def obj(**properties: Any) -> dict[str, Any]:
    """An object with exactly these properties, all of them present."""
    return {"type": "object", "required": list(properties), "properties": properties}


INT = {"type": "integer"}
STRING = {"type": "string"}
BOOL = {"type": "boolean"}
ID_LIST = {"type": "array", "items": STRING}

SCHEMAS.update(
    {
        "Usage": obj(
            prompt_tokens=INT,
            completion_tokens=INT,
            total_tokens=INT,
            cost_usd={"type": "number"},
            model_calls=INT,
            cached_tokens=INT,
        ),
        "ContextUsage": obj(used_tokens=INT, max_tokens=INT, percent={"type": "number"}),
        "ToolCall": obj(id=STRING, name=STRING, arguments={"type": "object"}),
        "Message": {
            "type": "object",
            "required": ["role", "text"],
            "properties": {
                "role": STRING,
                "text": STRING,
                "tool_calls": {"type": "array", "items": ref("ToolCall")},
                "tool_call_id": STRING,
                "is_error": BOOL,
                "model": STRING,
                "parts": {"type": "array", "items": ref("ContentPart")},
            },
        },
        "Run": obj(
            run_id=STRING,
            session_id=STRING,
            prompt=STRING,
            status={"enum": list(get_args(RunStatus))},
            idempotency_key=nullable(STRING),
            created_at={"type": "number"},
            started_at=nullable({"type": "number"}),
            ended_at=nullable({"type": "number"}),
            text=nullable(STRING),
            usage=ref("Usage"),
            stop_reason=nullable(STRING),
            error=nullable(STRING),
            webhook_url=nullable(STRING),
            last_event_id=INT,
            output=OUTPUT,
        ),
        "AgentResult": obj(
            text=STRING,
            messages={"type": "array", "items": ref("Message")},
            usage=ref("Usage"),
            tool_calls={"type": "array", "items": ref("ToolCall")},
            rounds=INT,
            stop_reason=STRING,
            output=OUTPUT,
        ),
    }
)

STATE = {"enum": ["idle", "running", "waiting", "paused"]}
PAGE = {"total": INT, "offset": INT, "limit": INT}
# What each route answers on success, as JSON (the SSE form of a turn is described in its summary).


PAGE_PARAMS = (
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
)

#: The request header that names a run within its session (a retry sends the same one).
RUN_PARAMS = (
    {
        "name": "Idempotency-Key",
        "in": "header",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
        "description": "names the run within its session: the same key again answers that run and "
        "starts nothing (another prompt: 422 IdempotencyConflict)",
    },
)
#: Where an event stream resumes: the events after this id (``Last-Event-ID`` wins over ``after``).
RESUME_PARAMS = (
    {
        "name": "Last-Event-ID",
        "in": "header",
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
        "description": "resume after this event id (what an EventSource sends on reconnecting)",
    },
    {
        "name": "after",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
        "description": "resume after this event id",
    },
)

# The failures routes share; a route declares the rest with ``errors=``.
ALWAYS = {
    "401": "Unauthorized: missing or wrong bearer token",
    "403": "Forbidden: the token lacks the scope the route needs (`scope` names it)",
    "503": "Draining, StoreError or HiveStopped",
    "504": "CallTimeout",
}
#: What every route that names a session (or creates one) can answer.
SESSION = {
    "400": "InvalidSessionId",
    "404": "SessionNotFound",
    "409": "SessionExists, SessionPaused or TurnCancelled",
    "429": "Overloaded: the session's mailbox is full",
    "500": "SessionFailed: the session crashed too often; reset it",
}
#: What every route with a request body can answer.
BODY = {
    "400": "InvalidBody: not a JSON object, nested deeper than 64, a NUL in a path or id, "
    "a number no field can hold",
    "413": "PayloadTooLarge",
    "422": "InvalidConfig: a field out of its range",
}
#: What a route that calls the model can answer.
MODEL = {
    "422": "LlmNotConfigured",
    "500": "TurnFailed or SessionFailed",
    "502": "LlmError: the provider refused; OutputInvalid: the answer matched no output_schema, "
    "also after one repair",
}
QUOTA = {"429": "QuotaExceeded: the tenant's max_sessions or max_concurrent_turns"}
#: What a route that names a run (``runs/{run_id}``) can answer.
RUN = {
    "404": "RunNotFound: no such run, expired, or another tenant's",
    "429": "Overloaded: the session's mailbox is full",
    "500": "SessionFailed: the session crashed too often; reset it",
}
#: What starting a run can answer besides a session route's failures.
RUN_START = {
    "403": "WebhookNotAllowed: the webhook URL matches no --allow-webhook-url",
    "409": "SessionBusy (on_busy=reject)",
    "422": "IdempotencyConflict: the Idempotency-Key names a run of another prompt",
}


def merge(*parts: dict[str, str]) -> dict[str, str]:
    """The statuses of ``parts``, the texts of one status joined, sorted by status."""
    merged: dict[str, str] = {}
    for part in parts:
        for status, text in part.items():
            merged[status] = f"{merged[status]}; {text}" if status in merged else text
    return dict(sorted(merged.items()))
