"""The service as a whole: tools, counts, the durability barrier, store health, audit log, caller, facts."""

from __future__ import annotations

import asyncio
from typing import Any

from sessionhive.model.ids import check_id

from .._info import public_health, service_info
from .._router import Call, Router
from .._schemas import INT, PAGE, PAGE_PARAMS, STRING, id_schema, nullable, obj

__all__ = ["router"]

router = Router()


@router.get(
    "tools",
    scope="read",
    result=obj(tools={"type": "array", "items": obj(name=STRING, description=STRING, parameters={})}),
)
async def tools(call: Call) -> Any:
    """The tools sessions can call"""
    return {"tools": [t.to_dict() for t in call.app.hive.list_tools()]}


@router.get("stats", scope="read", result=obj(sessions=INT, live_sessions=INT, turns_in_flight=INT))
async def stats(call: Call) -> Any:
    """Session counts and turns in flight"""
    app = call.app
    count, live = await asyncio.gather(app.hive.session_count(), app.hive.live_session_count())
    if call.principal.is_admin:
        return {"sessions": count, "live_sessions": live, "turns_in_flight": len(app.turns)}
    # A tenant counts its own sessions and turns; how many are resident in memory is the
    # service's figure (it tells nothing of whose they are).
    own = app.tenancy.visible(call.principal, await app.hive.list_sessions())
    running = app.tenancy.turns_running(call.principal.tenant)
    return {"sessions": len(own), "live_sessions": live, "turns_in_flight": running}


@router.post("flush", scope="admin", ok=204)
async def flush(call: Call) -> None:
    """Durability barrier: returns once everything is committed"""
    await call.app.hive.flush(timeout=60.0)


@router.get(
    "store/health",
    scope="read",
    result=obj(stores={"type": "array", "items": obj(name=STRING, status=STRING)}),
)
async def health(call: Call) -> Any:
    """Each store's health"""
    # Remote callers learn the store's kind and file name, not where it lives on the server.
    return {"stores": public_health(await call.app.hive.store_health())}


@router.post("load-all", scope="admin", result=obj(loaded=INT))
async def load_all(call: Call) -> Any:
    """Activate every stored session; returns how many"""
    return {"loaded": await call.app.hive.load_all_sessions()}


@router.get(
    "audit",
    scope="read",
    result=obj(
        **PAGE,
        records={
            "type": "array",
            "items": obj(
                time=STRING,
                token_name=STRING,
                tenant=STRING,
                action=STRING,
                session_id={"type": ["string", "null"]},
                detail={"type": ["object", "null"]},
            ),
        },
    ),
    errors={"400": "InvalidBody or InvalidSessionId: a bad offset, limit or session_id"},
    query=(
        *PAGE_PARAMS,
        {
            "name": "session_id",
            "in": "query",
            "schema": id_schema("session id"),
            "description": "one session's records",
        },
    ),
)
async def audit(call: Call) -> Any:
    """Who did what to which session (paged; session_id= filters)"""
    offset, limit = call.page(100)
    session_id = call.query.get("session_id")
    if session_id is not None:
        check_id(session_id)  # 400 for what no session id can be (empty, NUL, control characters...)
    total, records = await call.app.tenancy.records(call.principal, session_id, limit, offset)
    return {"total": total, "offset": offset, "limit": limit, "records": [r.to_dict() for r in records]}


@router.get("whoami", scope="", result={"type": "object", "required": ["name", "tenant", "scopes", "quota"]})
async def whoami(call: Call) -> Any:
    """The caller's token name, tenant, scopes and quotas"""
    quota = call.app.tenancy.quota(call.principal.tenant)
    limits = {"max_sessions": quota.max_sessions, "max_concurrent_turns": quota.max_concurrent_turns}
    return {**call.principal.to_dict(), "quota": limits}


@router.get(
    "info",
    scope="read",
    result=obj(
        version=STRING,
        store={
            **obj(kind=STRING),
            "description": "sqlite, postgresql, file or memory: never a path or a URL",
        },
        model=nullable(obj(provider=STRING, model=STRING)),
        llm_latency_s={"type": ["number", "null"], "description": "the scripted model's wait per answer"},
        loadtest_script=nullable(obj(tools_per_turn=INT, confirm_rate={"type": "number"})),
        actor_backend=STRING,
    ),
)
async def info(call: Call) -> Any:
    """What the service runs: version, store kind, model, load-test script, latency, actor backend"""
    return service_info(call.app.hive)
