"""The route table of the /v1 API, gathered from the resource modules that declare it.

One table, three readers: the service dispatches by it, ``openapi_document()``
describes it, and ``RemoteHive`` / ``AsyncRemoteHive`` build their requests
from it. It imports no web framework, so the client reads it with only
``httpx`` installed.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._router import Route
from .resources import admin, confirmations, events, operations, runs, sessions, turns

__all__ = ["ROUTE", "ROUTES", "ROUTE_SCOPES", "Route"]

ROUTES: tuple[Route, ...] = tuple(
    route
    for module in (sessions, turns, runs, events, operations, confirmations, admin)
    for route in module.router.routes
)
#: Each route by its name (its OpenAPI operationId).
ROUTE: Mapping[str, Route] = {route.name: route for route in ROUTES}
#: The scope each route needs ("" for any valid token), as the routes declare it.
ROUTE_SCOPES: Mapping[str, str] = {route.name: route.scope for route in ROUTES}

if len(ROUTE) != len(ROUTES) or len({(r.method, r.path) for r in ROUTES}) != len(ROUTES):
    raise RuntimeError("two routes share a name, or a method and path")
