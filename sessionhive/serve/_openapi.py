"""The route table of the /v1 API and the OpenAPI 3.1 document built from it (one source for both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ROUTE_DOCS", "RouteDoc", "openapi_document"]


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
        "List session ids (paged: offset, limit; details=true adds state and usage)",
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
    RouteDoc("GET", _S + "/history", "history", "The session's messages (paged: offset, limit)"),
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
    RouteDoc("GET", "tools", "tools", "The tools sessions can call"),
    RouteDoc("GET", "stats", "stats", "Session counts and turns in flight"),
    RouteDoc("POST", "flush", "flush", "Durability barrier: returns once everything is committed", ok=204),
    RouteDoc("GET", "store/health", "health", "Each store's health"),
    RouteDoc("POST", "load-all", "load_all", "Activate every stored session; returns how many"),
)

_SCHEMAS: dict[str, Any] = {
    "CreateSession": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "maxLength": 256},
            "config": {"$ref": "#/components/schemas/SessionConfig"},
            "exist_ok": {"type": "boolean", "description": "get or create: 200 whether it existed or not"},
        },
    },
    "SessionConfig": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "system_prompt": {"type": ["string", "null"]},
            "workspace": {"type": ["string", "null"], "description": "inside the service's workspace"},
            "max_context_length": {"type": "integer", "minimum": 0},
            "auto_compact": {"type": "boolean"},
            "auto_compact_threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "confirmation_policy": {"$ref": "#/components/schemas/ConfirmationPolicy"},
            "permission_policy": {"type": ["object", "null"]},
            "storage": {"enum": ["default", "memory"]},
            "durability": {"enum": ["durable", "batched", "sync"]},
            "max_tool_rounds": {"type": "integer", "minimum": 1},
            "metadata": {"type": "object"},
        },
    },
    "ConfirmationPolicy": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "require_confirmation": {
                "oneOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}}]
            },
            "timeout_s": {"type": "number", "exclusiveMinimum": 0},
            "on_timeout": {"enum": ["reject", "approve"]},
        },
    },
    "Turn": {"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
    "Configure": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "thinking": {"type": ["boolean", "null"]},
            "budget": {"type": ["integer", "null"]},
            "model_config": {
                "type": ["object", "null"],
                "description": "provider, model, base_url, max_tokens, temperature, timeout_s, max_retries; "
                "api_key is refused (keys come from the service's environment)",
            },
        },
    },
    "Confirmation": {
        "type": "object",
        "required": ["approved"],
        "properties": {"approved": {"type": "boolean"}, "reason": {"type": ["string", "null"]}},
    },
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; `error` names the sessionhive exception class",
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

_ERRORS = {
    "400": "InvalidSessionId or InvalidBody",
    "401": "Unauthorized: missing or wrong bearer token",
    "404": "SessionNotFound or ConfirmationNotFound",
    "409": "SessionExists, SessionPaused or TurnCancelled",
    "413": "PayloadTooLarge",
    "422": "InvalidConfig or LlmNotConfigured",
    "429": "Overloaded: the session's mailbox is full",
    "503": "Draining, StoreError or HiveStopped",
    "504": "CallTimeout",
}


def openapi_document() -> dict[str, Any]:
    from sessionhive import __version__

    paths: dict[str, Any] = {}
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
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
                                "application/json": {},
                                **({"text/event-stream": {}} if route.sse else {}),
                            }
                        }
                        if route.ok != 204
                        else {}
                    ),
                },
                **{code: {"description": text, "content": problem} for code, text in _ERRORS.items()},
            },
        }
        params = [part[1:-1] for part in route.path.split("/") if part.startswith("{")]
        if params:
            operation["parameters"] = [
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "percent-encoded; '/' in an id is sent as %2F",
                }
                for name in params
            ]
        if route.body:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.body}"}}},
            }
        paths.setdefault("/v1/" + route.path, {})[route.method.lower()] = operation
    for path, summary in (
        ("/healthz", "The process is up"),
        ("/readyz", "The store is reachable and the service is not draining"),
        ("/metrics", "Prometheus metrics"),
    ):
        paths[path] = {
            "get": {"summary": summary, "security": [], "responses": {"200": {"description": "ok"}}}
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "sessionhive", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "paths": paths,
    }
