"""The confirmations resource: a session's policy and waiting tool calls, decisions, and the inbox of all."""

from __future__ import annotations

import asyncio
from typing import Any

from sessionhive import InvalidConfig, Message

from .._bodies import policy_from_json, tool_id_from_path
from .._router import Call, Router
from .._schemas import BOOL, STRING, obj, ref

__all__ = ["INBOX_RECENT", "router"]

router = Router()
_S = "sessions/{session_id}"
#: How many of a session's last messages the confirmation inbox shows with each confirmation.
INBOX_RECENT = 6


@router.get(_S + "/policy", scope="read", result=ref("ConfirmationPolicy"))
async def get_policy(call: Call) -> Any:
    """The confirmation policy"""
    return (await call.app.hive.get_confirmation_policy(call.session_id)).to_dict()


@router.put(_S + "/policy", scope="write", body="ConfirmationPolicy", result=ref("ConfirmationPolicy"))
async def put_policy(call: Call) -> Any:
    """Replace the confirmation policy"""
    policy = policy_from_json(await call.app.body(call.request))
    stored = (await call.app.hive.set_confirmation_policy(call.session_id, policy)).to_dict()
    await call.app.audit(call, "policy", {"confirmation_policy": stored})
    return stored


@router.get(
    _S + "/confirmations",
    scope="read",
    result=obj(pending={"type": "array", "items": {"type": "object", "required": ["tool_id"]}}),
)
async def confirmations(call: Call) -> Any:
    """Tool calls waiting for a decision"""
    ids = await call.app.hive.pending_confirmations(call.session_id)
    known = call.app.view.confirmations.get(call.session_id, {})
    pending = []
    for tool_id in ids:
        event = known.get(tool_id)
        pending.append(
            {"tool_id": tool_id}
            if event is None
            else {
                "tool_id": tool_id,
                "tool_name": event.tool_name,
                "arguments": event.arguments,
                "timeout_s": event.timeout_s,
            }
        )
    return {"pending": pending}


@router.post(
    _S + "/confirmations/{tool_id}",
    scope="confirm",
    body="Confirmation",
    result=obj(confirmed=BOOL),
    errors={"400": "InvalidBody: a control character in the tool id", "404": "ConfirmationNotFound"},
)
async def confirm(call: Call) -> Any:
    """Approve or reject a tool call"""
    body = await call.app.body(call.request)
    approved, reason = body.get("approved"), body.get("reason")
    if not isinstance(approved, bool):
        raise InvalidConfig("the confirmation body needs a boolean field 'approved'")
    if reason is not None and not isinstance(reason, str):
        raise InvalidConfig("reason must be a string or null")
    tool_id = tool_id_from_path(call.params[1])
    # ConfirmationResolved names the token that decided, as the audit record below does.
    confirmed = await call.app.hive.confirm_tool(
        call.session_id, tool_id, approved, reason, decided_by=call.principal.name
    )
    detail = {"tool_id": tool_id, "approved": approved, "reason": reason, "confirmed": confirmed}
    await call.app.audit(call, "confirm", detail)
    return {"confirmed": confirmed}


@router.get(
    "confirmations",
    scope="read",
    result=obj(
        pending={
            "type": "array",
            "items": obj(
                session_id=STRING,
                parent_id={
                    "type": ["string", "null"],
                    "description": "the session's parent (a task tool's child asks here)",
                },
                tool_id=STRING,
                tool_name=STRING,
                arguments={"type": "object"},
                timeout_s={"type": "number"},
                waiting_since={"type": "number", "description": "Unix time the call began waiting"},
                prompt={**STRING, "description": "the session's last prompt"},
                recent={"type": "array", "items": ref("Message"), "description": "its last messages"},
            ),
        }
    ),
)
async def inbox(call: Call) -> Any:
    """Every tool call waiting for a decision in the caller's sessions, oldest first, with the
    prompt and the last messages that led to it"""
    sessions = call.app.tenancy.visible(call.principal, list(call.app.view.confirmations))
    # The Hive says what still waits (a call answered by someone this service did not see
    # leaves); the history says what led to it.
    asked = await asyncio.gather(*(_waiting_in(call, sid) for sid in sessions), return_exceptions=True)
    pending = [item for found in asked if isinstance(found, list) for item in found]
    pending.sort(key=lambda item: (item["waiting_since"], item["session_id"], item["tool_id"]))
    return {"pending": pending}


async def _waiting_in(call: Call, sid: str) -> list[dict[str, Any]]:
    """One session's inbox entries: its waiting calls, with the prompt and the messages before."""
    hive, view = call.app.hive, call.app.view
    still, messages = await asyncio.gather(hive.pending_confirmations(sid), hive.history(sid))
    prompts = [m.text for m in messages if m.role == "user"]
    prompt = view.prompts.get(sid)
    if prompt is not None and prompt != (prompts[-1] if prompts else None):
        # The running turn's prompt reaches the history when the turn ends: it led to the call.
        messages = [*messages, Message.user(prompt)]
    elif prompt is None:
        prompt = prompts[-1] if prompts else ""
    recent = [m.to_dict() for m in messages[-INBOX_RECENT:]]
    known = view.confirmations.get(sid, {})
    return [
        {
            "session_id": sid,
            "parent_id": event.parent_id,
            "tool_id": tool_id,
            "tool_name": event.tool_name,
            "arguments": event.arguments,
            "timeout_s": event.timeout_s,
            "waiting_since": view.waiting_since.get((sid, tool_id), 0.0),
            "prompt": prompt,
            "recent": recent,
        }
        for tool_id, event in known.items()
        if tool_id in still
    ]
