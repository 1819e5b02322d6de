"""``sessionhive serve``: the Hive behind an HTTP API, with a live console for the humans in the loop.

``serve_app(hive)`` returns the ASGI app (Starlette underneath) for users who
run their own server; ``run_service`` is what the ``sessionhive serve``
command runs: uvicorn on one port, a bearer token, and a graceful drain on
SIGTERM/SIGINT. Needs the ``serve`` extra (``pip install sessionhive[serve]``).

Several tokens, each with a tenant and scopes: ``TokenTable.load(path)`` reads
a token file (``new_token`` makes an entry) and ``serve_app(hive,
tokens=..., audit=AuditLog.for_store(store))`` serves each tenant its own
sessions, within its quotas, with an audit log.
"""

from __future__ import annotations

from ._app import DEFAULT_MAX_BODY, ServeApp, serve_app
from ._auth import ALL_SCOPES, Principal, TenantQuota, TokenTable, new_token, token_digest
from ._openapi import openapi_document
from ._problems import HttpProblem
from ._server import ServeOptions, is_loopback, read_token, run_service
from ._thread import ServerThread

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_MAX_BODY",
    "HttpProblem",
    "Principal",
    "ServeApp",
    "ServeOptions",
    "ServerThread",
    "TenantQuota",
    "TokenTable",
    "is_loopback",
    "new_token",
    "openapi_document",
    "read_token",
    "run_service",
    "serve_app",
    "token_digest",
]
