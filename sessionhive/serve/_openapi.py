"""The route table of the /v1 API and the OpenAPI 3.1 document built from it (one source for both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessionhive.model.ids import MAX_ID_LENGTH, id_pattern
from sessionhive.model.llm_config import PROVIDERS
from sessionhive.model.validate import MAX_INT, MAX_PATH_BYTES, MAX_SECONDS

__all__ = ["MAX_OFFSET", "MAX_PAGE", "ROUTE_DOCS", "RouteDoc", "openapi_document"]

# The paging bounds of list and history (the server refuses others with a 400).
MAX_PAGE = 1000
MAX_OFFSET = 1 << 62


@dataclass(frozen=True)
class RouteDoc:
    method: str
    path: str  # under /v1, with {placeholders}
    name: str  # the handler is ServeApp._h_<name>
    summary: str
    body: str | None = None  # a schema name under components/schemas
    ok: int = 200
    sse: bool = False


_S = "sessions/{session_id}"

ROUTE_DOCS: tuple[RouteDoc, ...] = (
    RouteDoc("POST", "sessions", "create", "Create a session", "CreateSession", 201),
    RouteDoc(
        "GET",
        "sessions",
        "list",
        "List session ids: waiting for a decision first, then by id (paged: offset, limit; q= an id "
        "prefix; state= one state; details=true adds state and usage)",
    ),
    RouteDoc("GET", _S, "show", "A session: state, usage, context, children, model, policy"),
    RouteDoc("DELETE", _S, "destroy", "Destroy a session and its descendants", ok=204),
    RouteDoc("POST", _S + "/children", "create_child", "Create a child session", "CreateSession", 201),
    RouteDoc("GET", _S + "/children", "children", "The ids of a session's children"),
    RouteDoc(
        "POST",
        _S + "/turns",
        "turn",
        "Run a turn: the AgentResult, or with Accept: text/event-stream its events then `result`",
        "Turn",
        sse=True,
    ),
    RouteDoc("GET", _S + "/events", "events", "Live server-sent events of the session", sse=True),
    RouteDoc(
        "GET",
        _S + "/history",
        "history",
        "The session's messages: the newest `limit` by default, `before=` pages back, `offset=` forward",
    ),
    RouteDoc("GET", _S + "/usage", "usage", "Tokens the session has spent"),
    RouteDoc("GET", _S + "/context", "context", "How full the context window is"),
    RouteDoc("POST", _S + "/pause", "pause", "Pause: new turns are refused with SessionPaused"),
    RouteDoc("POST", _S + "/resume", "resume", "Resume a paused session"),
    RouteDoc("POST", _S + "/cancel", "cancel", "Cancel confirmations, queued turns and the running turn"),
    RouteDoc(
        "POST", _S + "/compact", "compact", "Compact the history now (auto=true: only past the threshold)"
    ),
    RouteDoc("POST", _S + "/clear", "clear", "Empty the history", ok=204),
    RouteDoc("POST", _S + "/reset", "reset", "Let a session marked failed take work again"),
    RouteDoc("GET", _S + "/policy", "get_policy", "The confirmation policy"),
    RouteDoc("PUT", _S + "/policy", "put_policy", "Replace the confirmation policy", "ConfirmationPolicy"),
    RouteDoc("PUT", _S + "/configure", "configure", "Set thinking, budget and model", "Configure", 204),
    RouteDoc("GET", _S + "/llm", "llm", "The session's model (never its API key)"),
    RouteDoc("GET", _S + "/confirmations", "confirmations", "Tool calls waiting for a decision"),
    RouteDoc(
        "POST", _S + "/confirmations/{tool_id}", "confirm", "Approve or reject a tool call", "Confirmation"
    ),
    RouteDoc(
        "GET",
        "confirmations",
        "inbox",
        "Every tool call waiting for a decision in the caller's sessions, oldest first, with the "
        "prompt and the last messages that led to it",
    ),
    RouteDoc("GET", "tools", "tools", "The tools sessions can call"),
    RouteDoc("GET", "stats", "stats", "Session counts and turns in flight"),
    RouteDoc("POST", "flush", "flush", "Durability barrier: returns once everything is committed", ok=204),
    RouteDoc("GET", "store/health", "health", "Each store's health"),
    RouteDoc("POST", "load-all", "load_all", "Activate every stored session; returns how many"),
    RouteDoc("GET", "audit", "audit", "Who did what to which session (paged; session_id= filters)"),
    RouteDoc("GET", "whoami", "whoami", "The caller's token name, tenant, scopes and quotas"),
    RouteDoc(
        "GET",
        "info",
        "info",
        "What the service runs: version, store kind, model, load-test script, latency, actor backend",
    ),
)

_INT64 = {"minimum": -MAX_INT - 1, "maximum": MAX_INT}
_NULL = {"type": "null"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, _NULL]}


def _id_schema(what: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_LENGTH,
        "pattern": id_pattern(),
        "description": f"{what}: no control characters, no leading or trailing whitespace",
    }


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


# Request schemas say what the server accepts, no more: a body they refuse is refused (400 or 422),
# and a body they accept is not refused for its shape. schemathesis holds the server to both.
_SCHEMAS: dict[str, Any] = {
    "CreateSession": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": _id_schema("the new session's id"),
            "config": _nullable(_ref("SessionConfig")),
            "exist_ok": {"type": "boolean", "description": "get or create: 200 whether it existed or not"},
        },
        "additionalProperties": _ref("JsonValue"),
    },
    "JsonValue": {
        "description": "any JSON value nested at most 64 deep whose numbers fit a signed 64-bit integer's "
        "range (the bound of every body, 400 InvalidBody past it)",
        "anyOf": [
            {"type": ["string", "boolean", "null"]},
            {"type": "number", **_INT64},
            {"type": "array", "items": _ref("JsonValue")},
            {"type": "object", "additionalProperties": _ref("JsonValue")},
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
            "confirmation_policy": _nullable(_ref("ConfirmationPolicy")),
            "permission_policy": _nullable(_ref("PermissionPolicy")),
            "storage": {"enum": ["default", "memory"]},
            "durability": {"enum": ["durable", "batched", "sync"]},
            "max_tool_rounds": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
            "allow_network": {"type": "boolean"},
            "resume_interrupted": {"type": "boolean"},
            "metadata": _nullable({"type": "object", "additionalProperties": _ref("JsonValue")}),
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
        "properties": {"prompt": {"type": "string"}},
        "additionalProperties": _ref("JsonValue"),
    },
    "Configure": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "thinking": {"type": ["boolean", "null"]},
            "budget": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_INT},
            "model_config": _nullable(_ref("ModelConfig")),
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
        "additionalProperties": _ref("JsonValue"),
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


def _object(**properties: Any) -> dict[str, Any]:
    """An object with exactly these properties, all of them present."""
    return {"type": "object", "required": list(properties), "properties": properties}


_INT = {"type": "integer"}
_STRING = {"type": "string"}
_BOOL = {"type": "boolean"}
_ID_LIST = {"type": "array", "items": _STRING}

_SCHEMAS.update(
    {
        "Usage": _object(
            prompt_tokens=_INT,
            completion_tokens=_INT,
            total_tokens=_INT,
            cost_usd={"type": "number"},
            model_calls=_INT,
            cached_tokens=_INT,
        ),
        "ContextUsage": _object(used_tokens=_INT, max_tokens=_INT, percent={"type": "number"}),
        "ToolCall": _object(id=_STRING, name=_STRING, arguments={"type": "object"}),
        "Message": {
            "type": "object",
            "required": ["role", "text"],
            "properties": {
                "role": _STRING,
                "text": _STRING,
                "tool_calls": {"type": "array", "items": _ref("ToolCall")},
                "tool_call_id": _STRING,
                "is_error": _BOOL,
                "model": _STRING,
            },
        },
        "AgentResult": _object(
            text=_STRING,
            messages={"type": "array", "items": _ref("Message")},
            usage=_ref("Usage"),
            tool_calls={"type": "array", "items": _ref("ToolCall")},
            rounds=_INT,
            stop_reason=_STRING,
        ),
    }
)

_STATE = {"enum": ["idle", "running", "waiting", "paused"]}
_PAGE = {"total": _INT, "offset": _INT, "limit": _INT}
# What each route answers on success, as JSON (the SSE form of a turn is described in its summary).
_RESULTS: dict[str, dict[str, Any]] = {
    "create": _object(id=_STRING),
    "list": {**_object(**_PAGE, ids=_ID_LIST), "description": "details=true adds `sessions`"},
    "show": _object(
        id=_STRING,
        state=_STATE,
        is_child=_BOOL,
        children=_ID_LIST,
        usage=_ref("Usage"),
        context=_ref("ContextUsage"),
        pending_confirmations=_ID_LIST,
        llm={"type": ["object", "null"]},
        confirmation_policy={"type": "object"},
    ),
    "create_child": _object(id=_STRING, parent_id=_STRING),
    "children": _object(ids=_ID_LIST),
    "turn": _ref("AgentResult"),
    "history": _object(**_PAGE, messages={"type": "array", "items": _ref("Message")}),
    "usage": _ref("Usage"),
    "context": _ref("ContextUsage"),
    "pause": _object(changed=_BOOL, state=_STATE),
    "resume": _object(changed=_BOOL, state=_STATE),
    "cancel": _object(changed=_BOOL),
    "compact": _object(compacted=_BOOL),
    "reset": _object(changed=_BOOL),
    "get_policy": _ref("ConfirmationPolicy"),
    "put_policy": _ref("ConfirmationPolicy"),
    "llm": {"type": ["object", "null"], "description": "provider, model, base_url...; never the key"},
    "confirmations": _object(pending={"type": "array", "items": {"type": "object", "required": ["tool_id"]}}),
    "confirm": _object(confirmed=_BOOL),
    "inbox": _object(
        pending={
            "type": "array",
            "items": _object(
                session_id=_STRING,
                tool_id=_STRING,
                tool_name=_STRING,
                arguments={"type": "object"},
                timeout_s={"type": "number"},
                waiting_since={"type": "number", "description": "Unix time the call began waiting"},
                prompt={**_STRING, "description": "the session's last prompt"},
                recent={"type": "array", "items": _ref("Message"), "description": "its last messages"},
            ),
        }
    ),
    "tools": _object(
        tools={"type": "array", "items": _object(name=_STRING, description=_STRING, parameters={})}
    ),
    "stats": _object(sessions=_INT, live_sessions=_INT, turns_in_flight=_INT),
    "health": _object(stores={"type": "array", "items": _object(name=_STRING, status=_STRING)}),
    "load_all": _object(loaded=_INT),
    "audit": _object(
        **_PAGE,
        records={
            "type": "array",
            "items": _object(
                time=_STRING,
                token_name=_STRING,
                tenant=_STRING,
                action=_STRING,
                session_id={"type": ["string", "null"]},
                detail={"type": ["object", "null"]},
            ),
        },
    ),
    "whoami": {"type": "object", "required": ["name", "tenant", "scopes", "quota"]},
    "info": _object(
        version=_STRING,
        store={
            **_object(kind=_STRING),
            "description": "sqlite, postgresql, file or memory: never a path or a URL",
        },
        model=_nullable(_object(provider=_STRING, model=_STRING)),
        llm_latency_s={"type": ["number", "null"], "description": "the scripted model's wait per answer"},
        loadtest_script=_nullable(_object(tools_per_turn=_INT, confirm_rate={"type": "number"})),
        actor_backend=_STRING,
    ),
}


# Every authenticated route can answer these.
_ALWAYS = {
    "401": "Unauthorized: missing or wrong bearer token",
    "403": "Forbidden: the token lacks the scope the route needs (`scope` names it)",
    "503": "Draining, StoreError or HiveStopped",
    "504": "CallTimeout",
}
_SESSION = {
    "400": "InvalidSessionId",
    "404": "SessionNotFound",
    "409": "SessionExists, SessionPaused or TurnCancelled",
    "429": "Overloaded: the session's mailbox is full",
    "500": "SessionFailed: the session crashed too often; reset it",
}
_BODY = {
    "400": "InvalidBody: not a JSON object, nested deeper than 64, a NUL in a path or id, "
    "a number no field can hold",
    "413": "PayloadTooLarge",
    "422": "InvalidConfig: a field out of its range",
}
_MODEL = {
    "422": "LlmNotConfigured",
    "500": "TurnFailed or SessionFailed",
    "502": "LlmError: the provider refused",
}


def _responses(route: RouteDoc) -> dict[str, str]:
    """Each status ``route`` can answer besides success, with the errors behind it."""
    parts = [_ALWAYS]
    if "{session_id}" in route.path or route.name == "create":
        parts.append(_SESSION)
    if route.body:
        parts.append(_BODY)
    if route.name in ("turn", "compact"):
        parts.append(_MODEL)
    if route.name == "list":
        parts.append({"400": "InvalidBody: offset, limit or state out of range"})
    if route.name == "history":
        parts.append({"400": "InvalidBody: offset, limit or before out of range"})
    if route.name in ("create", "create_child", "turn"):
        parts.append({"429": "QuotaExceeded: the tenant's max_sessions or max_concurrent_turns"})
    if route.name == "audit":
        parts.append({"400": "InvalidBody or InvalidSessionId: a bad offset, limit or session_id"})
    if route.name == "confirm":
        parts.append(
            {"400": "InvalidBody: a control character in the tool id", "404": "ConfirmationNotFound"}
        )
    merged: dict[str, str] = {}
    for part in parts:
        for status, text in part.items():
            merged[status] = f"{merged[status]}; {text}" if status in merged else text
    return dict(sorted(merged.items()))


_PAGE_PARAMS = (
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
)
_QUERY: dict[str, tuple[dict[str, Any], ...]] = {
    "list": (
        *_PAGE_PARAMS,
        {"name": "details", "in": "query", "schema": {"type": "string"}, "description": "true or 1"},
        {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "an id prefix"},
        {
            "name": "state",
            "in": "query",
            "schema": {"enum": ["waiting", "running", "paused", "idle"]},
            "description": "only sessions in this state (default: all, those waiting first)",
        },
    ),
    "history": (
        *_PAGE_PARAMS,
        {
            "name": "before",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
            "description": "the `limit` messages before this index (with offset: stop before it)",
        },
    ),
    "audit": (
        *_PAGE_PARAMS,
        {
            "name": "session_id",
            "in": "query",
            "schema": _id_schema("session id"),
            "description": "one session's records",
        },
    ),
    "compact": ({"name": "auto", "in": "query", "schema": {"type": "string"}, "description": "true or 1"},),
}


def openapi_document() -> dict[str, Any]:
    from sessionhive import __version__

    paths: dict[str, Any] = {}
    problem = {"application/problem+json": {"schema": _ref("Problem")}}
    for route in ROUTE_DOCS:
        operation: dict[str, Any] = {
            "operationId": route.name,
            "summary": route.summary,
            "security": [{"bearer": []}],
            "responses": {
                str(route.ok): {
                    "description": "success",
                    **(
                        {
                            "content": {
                                "application/json": (
                                    {"schema": _RESULTS[route.name]} if route.name in _RESULTS else {}
                                ),
                                **({"text/event-stream": {}} if route.sse else {}),
                            }
                        }
                        if route.ok != 204
                        else {}
                    ),
                },
                **{
                    code: {"description": text, "content": problem}
                    for code, text in _responses(route).items()
                },
            },
        }
        if route.name == "create":  # exist_ok answers 200 for a session that was there already
            operation["responses"]["200"] = {
                "description": "exist_ok: the session",
                "content": {"application/json": {"schema": _RESULTS["create"]}},
            }
        params = [part[1:-1] for part in route.path.split("/") if part.startswith("{")]
        operation["parameters"] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _id_schema("a session id" if name == "session_id" else "a tool call id"),
                "description": "percent-encoded; '/' in an id is sent as %2F",
            }
            for name in params
        ] + [dict(param) for param in _QUERY.get(route.name, ())]
        if not operation["parameters"]:
            del operation["parameters"]
        if route.body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(route.body)}},
            }
        paths.setdefault("/v1/" + route.path, {})[route.method.lower()] = operation
    for path, summary in (
        ("/healthz", "The process is up"),
        ("/readyz", "The store is reachable and the service is not draining"),
        ("/metrics", "Prometheus metrics"),
    ):
        responses: dict[str, Any] = {"200": {"description": "ok"}}
        if path == "/readyz":
            responses["503"] = {"description": "Draining or StoreUnavailable", "content": problem}
        paths[path] = {"get": {"summary": summary, "security": [], "responses": responses}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "sessionhive", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "paths": paths,
    }
