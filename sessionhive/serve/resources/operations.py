"""Operations on one session: pause, resume, cancel, compact, clear, reset and configure."""

from __future__ import annotations

from typing import Any

from sessionhive import InvalidConfig

from .._bodies import llm_config_from_json
from .._router import Call, Router
from .._schemas import BOOL, MODEL, STATE, obj

__all__ = ["router"]

router = Router()
_S = "sessions/{session_id}"
_TRUE = ("1", "true")


@router.post(_S + "/pause", scope="write", result=obj(changed=BOOL, state=STATE))
async def pause(call: Call) -> Any:
    """Pause: new turns are refused with SessionPaused"""
    return await _set_paused(call, True)


@router.post(_S + "/resume", scope="write", result=obj(changed=BOOL, state=STATE))
async def resume(call: Call) -> Any:
    """Resume a paused session"""
    return await _set_paused(call, False)


async def _set_paused(call: Call, paused: bool) -> dict[str, Any]:
    app, sid = call.app, call.session_id
    if paused:
        changed = await app.hive.pause_session(sid)
        app.view.paused.add(sid)
    else:
        changed = await app.hive.resume_session(sid)
        app.view.paused.discard(sid)
    await app.audit(call, "pause" if paused else "resume", {"changed": changed})
    return {"changed": changed, "state": app.view.state(sid)}


@router.post(_S + "/cancel", scope="write", result=obj(changed=BOOL))
async def cancel(call: Call) -> Any:
    """Cancel confirmations, queued turns and the running turn"""
    changed = await call.app.hive.cancel_operation(call.session_id)
    await call.app.audit(call, "cancel", {"changed": changed})
    return {"changed": changed}


@router.post(
    _S + "/compact",
    scope="write",
    result=obj(compacted=BOOL),
    errors=MODEL,
    query=({"name": "auto", "in": "query", "schema": {"type": "string"}, "description": "true or 1"},),
)
async def compact(call: Call) -> Any:
    """Compact the history now (auto=true: only past the threshold)"""
    hive = call.app.hive
    if call.query.get("auto") in _TRUE:
        compacted = await hive.maybe_auto_compact(call.session_id)
    else:
        await hive.compact(call.session_id)
        compacted = True
    await call.app.audit(call, "compact", {"compacted": compacted})
    return {"compacted": compacted}


@router.post(_S + "/clear", scope="write", ok=204)
async def clear(call: Call) -> None:
    """Empty the history"""
    await call.app.hive.clear(call.session_id)
    await call.app.audit(call, "clear")


@router.post(_S + "/reset", scope="write", result=obj(changed=BOOL))
async def reset(call: Call) -> Any:
    """Let a session marked failed take work again"""
    changed = await call.app.hive.reset_session(call.session_id)
    await call.app.audit(call, "reset", {"changed": changed})
    return {"changed": changed}


@router.put(_S + "/configure", scope="write", body="Configure", ok=204)
async def configure(call: Call) -> None:
    """Set thinking, budget and model"""
    body = await call.app.body(call.request)
    unknown = sorted(set(body) - {"thinking", "budget", "model_config"})
    if unknown:
        raise InvalidConfig(
            f"configure has unknown field(s) {unknown}; known: thinking, budget, model_config"
        )
    thinking, budget = body.get("thinking"), body.get("budget")
    if thinking is not None and not isinstance(thinking, bool):
        raise InvalidConfig("thinking must be true, false or null")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
        raise InvalidConfig("budget must be an integer number of tokens or null")
    model = body.get("model_config")
    model_config = llm_config_from_json(model) if model is not None else None
    await call.app.hive.configure(call.session_id, thinking, budget, model_config)
    # to_dict() never holds the API key (and a body's api_key is refused before this).
    model = model_config.to_dict() if model_config is not None else None
    await call.app.audit(call, "configure", {"thinking": thinking, "budget": budget, "model_config": model})
