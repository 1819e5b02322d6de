"""The events resource: a session's live events as server-sent events, for as long as the client reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .. import _router
from .._router import Call, EventStream, Frame, Router, event_frame
from .._schemas import RESUME_PARAMS

__all__ = ["router"]

router = Router()


@router.get(
    "sessions/{session_id}/events",
    scope="read",
    sse=True,
    errors={"400": "InvalidBody: Last-Event-ID or after is not an event id"},
    query=RESUME_PARAMS,
)
async def events(call: Call) -> Any:
    """Live server-sent events of the session, each with its `id:`; `Last-Event-ID` (or `after=`)
    first replays the events after that one, as far back as the session keeps them"""
    app, sid = call.app, call.session_id
    after = call.last_event_id()
    subscription = await app.hive.subscribe(sid, after=after)
    app.subscriptions.add(subscription)

    async def follow() -> AsyncIterator[Frame | None]:
        try:
            yield Frame("subscribed", {"session_id": sid})
            while True:
                try:
                    event = await subscription.get(timeout=_router.SSE_KEEPALIVE_S)
                except TimeoutError:
                    yield None
                    continue
                if event is None:
                    yield Frame("end", {"session_id": sid, "draining": app.draining})
                    return
                app.view.observe(event)
                yield event_frame(event)
        finally:
            app.subscriptions.discard(subscription)
            subscription.close()

    return EventStream(follow())
