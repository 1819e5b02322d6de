"""The OpenAPI 3.1 document of the service, built from the route table the handlers declare.

Every status a route can answer is listed: those every authenticated route
has (:data:`~._schemas.ALWAYS`), those of a route that names a session or
takes a body, and those the route declares. Ids travel percent-encoded in
one path segment each: a session id may contain ``/`` (``alice/researcher``
is sent as ``alice%2Fresearcher``), which is why the service matches routes
on the raw path.
"""

from __future__ import annotations

from typing import Any

from ._schemas import ALWAYS, BODY, RUN, SCHEMAS, SESSION, id_schema, merge, ref
from .routes import ROUTES, Route

__all__ = ["openapi_document"]

_PROBLEM = {"application/problem+json": {"schema": ref("Problem")}}
#: What each path parameter names.
_PATH_IDS = {"session_id": "a session id", "run_id": "a run id (run_...)", "tool_id": "a tool call id"}
_ID_RULE = (
    "percent-encoded, one path segment: a '/' in an id is sent as %2F; "
    "the service matches routes on the raw path so the id stays whole"
)


def _statuses(route: Route) -> dict[str, str]:
    """Each status ``route`` can answer besides success, with the errors behind it."""
    return merge(
        ALWAYS,
        SESSION if route.names_session else {},
        RUN if route.names_run else {},
        BODY if route.body else {},
        dict(route.errors),
    )


def _success(route: Route) -> dict[str, Any]:
    if route.ok == 204:
        return {"description": "success"}
    content: dict[str, Any] = {"application/json": {"schema": route.result} if route.result else {}}
    if route.sse:
        content["text/event-stream"] = {}
    return {"description": "success", "content": content}


def _operation(route: Route) -> dict[str, Any]:
    responses = {str(route.ok): _success(route)}
    for status, text in route.also_ok.items():
        responses[status] = {
            "description": text,
            "content": {"application/json": {"schema": route.result} if route.result else {}},
        }
    for status, text in _statuses(route).items():
        responses[status] = {"description": text, "content": _PROBLEM}
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "security": [{"bearer": []}],
        "responses": responses,
    }
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": id_schema(_PATH_IDS[name]),
            "description": _ID_RULE,
        }
        for name in (part[1:-1] for part in route.segments if part.startswith("{"))
    ] + [dict(param) for param in route.query]
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(route.body)}},
        }
    return operation


def openapi_document() -> dict[str, Any]:
    from sessionhive import __version__

    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault("/v1/" + route.path, {})[route.method.lower()] = _operation(route)
    for path, summary in (
        ("/healthz", "The process is up"),
        ("/readyz", "The store is reachable and the service is not draining"),
        ("/metrics", "Prometheus metrics"),
    ):
        responses: dict[str, Any] = {"200": {"description": "ok"}}
        if path == "/readyz":
            responses["503"] = {"description": "Draining or StoreUnavailable", "content": _PROBLEM}
        paths[path] = {"get": {"summary": summary, "security": [], "responses": responses}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sessionhive",
            "version": __version__,
            "description": "Ids travel in one path segment each, percent-encoded: a session id may "
            "contain '/' (alice/researcher is sent as alice%2Fresearcher). Errors are RFC 9457 "
            "problem documents whose `error` names the sessionhive exception class.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
        "paths": paths,
    }
