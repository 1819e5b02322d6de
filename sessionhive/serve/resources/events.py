"""The events resource: a session's live events as server-sent events, for as long as the client reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sessionhive import event_to_dict

from .. import _router
from .._router import Call, EventStream, Router

__all__ = ["router"]

router = Router()


@router.get("sessions/{session_id}/events", scope="read", sse=True)
async def events(call: Call) -> Any:
    """Live server-sent events of the session"""
    app, sid = call.app, call.session_id
    subscription = await app.hive.subscribe(sid)
    app.subscriptions.add(subscription)

    async def follow() -> AsyncIterator[tuple[str, Any] | None]:
        try:
            yield "subscribed", {"session_id": sid}
            while True:
                try:
                    event = await subscription.get(timeout=_router.SSE_KEEPALIVE_S)
                except TimeoutError:
                    yield None
                    continue
                if event is None:
                    yield "end", {"session_id": sid, "draining": app.draining}
                    return
                app.view.observe(event)
                yield event.type, event_to_dict(event)
        finally:
            app.subscriptions.discard(subscription)
            subscription.close()

    return EventStream(follow())
