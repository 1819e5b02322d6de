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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import DEFAULT_MAX_BODY, ServeApp, serve_app
    from ._auth import ALL_SCOPES, Principal, TenantQuota, TokenTable, new_token, token_digest
    from ._openapi import openapi_document
    from ._server import ServeOptions, is_loopback, read_token, read_webhook_secret, run_service
    from ._thread import ServerThread
    from .problems import HttpProblem

# Imported when first asked for: the route table (``sessionhive.serve.routes``) is read by the
# HTTP client, which must not need the server's dependencies (starlette, uvicorn) to do so.
_WHERE = {
    "DEFAULT_MAX_BODY": "._app",
    "ServeApp": "._app",
    "serve_app": "._app",
    "ALL_SCOPES": "._auth",
    "Principal": "._auth",
    "TenantQuota": "._auth",
    "TokenTable": "._auth",
    "new_token": "._auth",
    "token_digest": "._auth",
    "openapi_document": "._openapi",
    "HttpProblem": ".problems",
    "ServeOptions": "._server",
    "is_loopback": "._server",
    "read_token": "._server",
    "read_webhook_secret": "._server",
    "run_service": "._server",
    "ServerThread": "._thread",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    "read_webhook_secret",
    "run_service",
    "serve_app",
    "token_digest",
]
