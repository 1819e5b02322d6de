"""The sessions resource: create, list, show and destroy sessions, their children, history and usage."""

from __future__ import annotations

import asyncio
import bisect
from typing import Any

from sessionhive import InvalidConfig, SessionExists

from .._auth import Principal
from .._bodies import session_config_from_json
from .._router import Answer, Call, Router
from .._schemas import (
    BOOL,
    ID_LIST,
    MAX_OFFSET,
    PAGE,
    PAGE_PARAMS,
    QUOTA,
    SESSION,
    STATE,
    STRING,
    merge,
    obj,
    ref,
)
from .._view import STATES
from ..problems import HttpProblem

__all__ = ["router"]

router = Router()
_S = "sessions/{session_id}"


@router.post(
    "sessions",
    scope="write",
    body="CreateSession",
    ok=201,
    result=obj(id=STRING),
    errors=merge(SESSION, QUOTA),
    also_ok={"200": "exist_ok: the session"},
)
async def create(call: Call) -> Any:
    """Create a session"""
    app = call.app
    body = await app.body(call.request)
    session_id = body.get("id")
    config = session_config_from_json(body.get("config"), app.workspace_root)
    exist_ok = body.get("exist_ok", False)
    if not isinstance(exist_ok, bool):
        raise InvalidConfig("exist_ok must be true or false")
    tenant = call.principal.tenant
    if exist_ok and isinstance(session_id, str) and app.tenancy.claimed_by(session_id) == tenant:
        # Already this tenant's: get_or_create must answer even when the tenant is at quota.
        return Answer(200, {"id": await app.hive.get_or_create_session(session_id, config)})
    created = await _create_owned(call, call.principal, tenant, session_id, config, exist_ok=exist_ok)
    return Answer(200 if exist_ok else 201, {"id": created})


async def _create_owned(
    call: Call,
    principal: Principal,
    tenant: str,
    session_id: Any,
    config: Any,
    *,
    exist_ok: bool,
    parent: str = "",
) -> str:
    """Create a session of ``tenant`` within its quota, claim it and audit it."""
    hive, tenancy = call.app.hive, call.app.tenancy
    tenancy.reserve_session(tenant)
    try:
        if parent:
            created = await hive.create_child_session(parent, session_id, config)
        else:
            created = await hive.create_session(session_id, config)
    except SessionExists:
        # get_or_create of a session that exists: the same answer, if the caller may see it.
        if exist_ok and (principal.is_admin or tenancy.owner(session_id) == tenant):
            return str(session_id)
        raise
    finally:
        tenancy.unreserve_session(tenant)
    await tenancy.claim([created], tenant)
    detail = {"parent_id": parent} if parent else {}
    await tenancy.record(principal, "create", created, tenant, detail)
    return created


@router.get(
    "sessions",
    scope="read",
    result={**obj(**PAGE, ids=ID_LIST), "description": "details=true adds `sessions`"},
    errors={"400": "InvalidBody: offset, limit or state out of range"},
    query=(
        *PAGE_PARAMS,
        {"name": "details", "in": "query", "schema": {"type": "string"}, "description": "true or 1"},
        {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "an id prefix"},
        {
            "name": "state",
            "in": "query",
            "schema": {"enum": list(STATES)},
            "description": "only sessions in this state (default: all, those waiting first)",
        },
    ),
)
async def list_(call: Call) -> Any:
    """List session ids: waiting for a decision first, then by id (paged: offset, limit; q= an id
    prefix; state= one state; details=true adds state and usage)"""
    app = call.app
    offset, limit = call.page(100)
    prefix = call.query.get("q", "")
    state = call.query.get("state")
    if state is not None and state not in STATES:
        raise HttpProblem(400, "InvalidBody", f"state must be one of {', '.join(STATES)}")
    # Ids only (the Hive's directory, sorted): no session is activated to be listed, so the
    # cost is one pass over the ids, whatever their number; only the page gets details.
    ids = _with_prefix(await app.hive.list_sessions(), prefix)
    ids = app.tenancy.visible(call.principal, ids)
    if state == "idle":
        busy = set().union(*(app.view.in_state(other) for other in STATES if other != "idle"))
        ordered = [sid for sid in ids if sid not in busy]
    elif state is not None:
        chosen = app.view.in_state(state)
        ordered = [sid for sid in ids if sid in chosen]
    else:  # the sessions waiting for a decision first, then the rest, each by id
        waiting = app.view.in_state("waiting")
        ordered = [sid for sid in ids if sid in waiting] + [sid for sid in ids if sid not in waiting]
    page = ordered[offset : offset + limit]
    data: dict[str, Any] = {"total": len(ordered), "offset": offset, "limit": limit, "ids": page}
    if call.query.get("details") in ("1", "true"):
        data["sessions"] = list(await asyncio.gather(*(_summary(call, sid) for sid in page)))
    return data


def _with_prefix(sorted_ids: list[str], prefix: str) -> list[str]:
    """The ids that start with ``prefix``: a contiguous run of a sorted list, found by bisection."""
    if not prefix:
        return sorted_ids
    start = bisect.bisect_left(sorted_ids, prefix)
    end = start
    while end < len(sorted_ids) and sorted_ids[end].startswith(prefix):
        end += 1
    return sorted_ids[start:end]


async def _summary(call: Call, sid: str) -> dict[str, Any]:
    app = call.app
    usage, context = await asyncio.gather(app.hive.usage(sid), app.hive.context_usage(sid))
    return {
        "id": sid,
        "state": app.view.state(sid),
        "usage": usage.to_dict(),
        "context": context.to_dict(),
        "pending_confirmations": len(app.view.confirmations.get(sid, {})),
    }


@router.get(
    _S,
    scope="read",
    result=obj(
        id=STRING,
        state=STATE,
        is_child=BOOL,
        children=ID_LIST,
        usage=ref("Usage"),
        context=ref("ContextUsage"),
        pending_confirmations=ID_LIST,
        llm={"type": ["object", "null"]},
        confirmation_policy={"type": "object"},
    ),
)
async def show(call: Call) -> Any:
    """A session: state, usage, context, children, model, policy"""
    hive, sid = call.app.hive, call.session_id
    usage = await hive.usage(sid)
    context = await hive.context_usage(sid)
    pending = await hive.pending_confirmations(sid)
    is_child = await hive.is_child_session(sid)
    children = await hive.get_child_sessions(sid)
    llm = await hive.get_llm_for_session(sid)
    policy = await hive.get_confirmation_policy(sid)
    return {
        "id": sid,
        "state": call.app.view.state(sid),
        "is_child": is_child,
        "children": children,
        "usage": usage.to_dict(),
        "context": context.to_dict(),
        "pending_confirmations": pending,
        "llm": llm.to_dict() if llm is not None else None,
        "confirmation_policy": policy.to_dict(),
    }


@router.delete(_S, scope="write", ok=204)
async def destroy(call: Call) -> None:
    """Destroy a session and its descendants"""
    app, sid = call.app, call.session_id
    # Every depth: the session's descendants go with it, and so do their owner rows (else
    # they would count against the tenant's max_sessions for ever).
    descendants: list[str] = []
    parents = [sid]
    while parents:
        children = await asyncio.gather(*(app.hive.get_child_sessions(p) for p in parents))
        parents = [child for found in children for child in found]
        descendants.extend(parents)
    await app.hive.destroy_session(sid)
    for gone in [sid, *descendants]:
        app.view.forget(gone)
    await app.tenancy.release([sid, *descendants])
    await app.audit(call, "delete", {"descendants": descendants})


@router.post(
    _S + "/children",
    scope="write",
    body="CreateSession",
    ok=201,
    result=obj(id=STRING, parent_id=STRING),
    errors=QUOTA,
)
async def create_child(call: Call) -> Any:
    """Create a child session"""
    body = await call.app.body(call.request)
    config = session_config_from_json(body.get("config"), call.app.workspace_root)
    # A child belongs to its parent's tenant (an admin creating it does not take it over).
    created = await _create_owned(
        call, call.principal, call.owner, body.get("id"), config, exist_ok=False, parent=call.session_id
    )
    return {"id": created, "parent_id": call.session_id}


@router.get(_S + "/children", scope="read", result=obj(ids=ID_LIST))
async def children(call: Call) -> Any:
    """The ids of a session's children"""
    return {"ids": await call.app.hive.get_child_sessions(call.session_id)}


@router.get(
    _S + "/history",
    scope="read",
    result=obj(**PAGE, messages={"type": "array", "items": ref("Message")}),
    errors={"400": "InvalidBody: offset, limit or before out of range"},
    query=(
        *PAGE_PARAMS,
        {
            "name": "before",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
            "description": "the `limit` messages before this index (with offset: stop before it)",
        },
    ),
)
async def history(call: Call) -> Any:
    """The session's messages: the newest `limit` by default, `before=` pages back, `offset=` forward"""
    offset, limit = call.page(200)
    messages = await call.app.hive.history(call.session_id)
    before = call.before(len(messages))
    if "offset" in call.query:  # forward from offset, stopping short of before
        shown = messages[offset : min(offset + limit, before)]
    else:  # the page that ends where the caller's oldest loaded page began (the newest first)
        offset = max(0, before - limit)
        shown = messages[offset:before]
    return {
        "total": len(messages),
        "offset": offset,
        "limit": limit,
        "messages": [m.to_dict() for m in shown],
    }


@router.get(_S + "/usage", scope="read", result=ref("Usage"))
async def usage(call: Call) -> Any:
    """Tokens the session has spent"""
    return (await call.app.hive.usage(call.session_id)).to_dict()


@router.get(_S + "/context", scope="read", result=ref("ContextUsage"))
async def context(call: Call) -> Any:
    """How full the context window is"""
    return (await call.app.hive.context_usage(call.session_id)).to_dict()


@router.get(
    _S + "/llm",
    scope="read",
    result={"type": ["object", "null"], "description": "provider, model, base_url...; never the key"},
)
async def llm(call: Call) -> Any:
    """The session's model (never its API key)"""
    config = await call.app.hive.get_llm_for_session(call.session_id)
    return config.to_dict() if config is not None else None
