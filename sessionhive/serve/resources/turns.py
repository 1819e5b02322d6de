"""The turns resource: run a turn, answered as its result or as its events while it runs.

A turn is a run: ``Idempotency-Key`` and ``on_busy`` work as on ``POST .../runs``, and
its event stream names the run in its first frame (``run``), so a client cut off
resumes with ``GET /v1/runs/{run_id}/events`` and ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sessionhive import AsyncTurnStream, SessionPaused
from sessionhive.model.content import parts_text

from .. import _router
from .._bodies import prompt_from_json
from .._router import Call, EventStream, Frame, Router, event_frame
from .._schemas import MODEL, QUOTA, RESUME_PARAMS, RUN_PARAMS, RUN_START, merge, ref
from .._view import Turn
from ..problems import HttpProblem, problem_for
from .runs import run_options

__all__ = ["router"]

router = Router()


@router.post(
    "sessions/{session_id}/turns",
    scope="write",
    body="Turn",
    result=ref("AgentResult"),
    sse=True,
    errors=merge(MODEL, QUOTA, RUN_START),
    query=(*RUN_PARAMS, *RESUME_PARAMS),
)
async def turn(call: Call) -> Any:
    """Run a turn: the AgentResult, or with Accept: text/event-stream `run` (its run id), its events
    (`id:` each), then `result`"""
    app, sid = call.app, call.session_id
    if app.draining:
        raise HttpProblem(503, "Draining", "the service is draining before it stops; no new turns")
    body = await app.body(call.request)
    prompt = prompt_from_json(body.get("prompt"), "turn")
    key, on_busy = run_options(call, body)
    after = call.last_event_id()
    # Counted against the session's tenant: the quota bounds what its sessions cost the machine.
    app.tenancy.turn_started(call.owner)
    try:
        stream = await app.hive.generate_streaming(
            sid, prompt, idempotency_key=key, on_busy=on_busy, output_schema=body.get("output_schema")
        )
    except BaseException as exc:
        app.tenancy.turn_ended(call.owner)
        if isinstance(exc, SessionPaused):
            app.view.paused.add(sid)
        raise
    running = _watch(call, stream)
    detail = {
        "prompt_chars": len(prompt if isinstance(prompt, str) else parts_text(prompt)),
        "run_id": stream.run_id,
    }
    await app.tenancy.record(call.principal, "turn", sid, call.owner, detail)
    if "text/event-stream" in call.request.headers.get("accept", ""):
        return EventStream(_turn_events(running, stream.run_id, after))
    return (await asyncio.shield(running.outcome)).to_dict()


def _watch(call: Call, stream: AsyncTurnStream) -> Turn:
    """Follow the turn to its end whether or not anyone still listens (the drain waits for it)."""
    app, sid, tenant = call.app, call.session_id, call.owner
    running = Turn(sid, tenant)
    app.view.turn_started(sid)
    app.turns.add(running)

    async def follow() -> None:
        try:
            async for event in stream:
                app.view.observe(event)
                running.queue.put_nowait(("event", event))
            try:
                result = await stream.result()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                running.outcome.set_exception(exc)
                running.queue.put_nowait(("error", exc))
            else:
                running.outcome.set_result(result)
                running.queue.put_nowait(("result", result))
        finally:
            app.view.turn_ended(sid)
            app.tenancy.turn_ended(tenant)
            app.turns.discard(running)
            if not running.outcome.done():
                running.outcome.cancel()
            # Nobody may ever read it (a JSON turn, a client gone): do not warn about it.
            if running.outcome.done() and not running.outcome.cancelled():
                running.outcome.exception()

    running.task = asyncio.get_running_loop().create_task(follow())
    return running


async def _turn_events(running: Turn, run_id: str, after: int | None) -> AsyncIterator[Frame | None]:
    """``run`` first, the turn's events (those after ``after``: a retry that resumes), its outcome last."""
    yield Frame("run", {"run_id": run_id, "session_id": running.session_id})
    while True:
        try:
            # A turn waiting for a human is silent: keep idle-timeout proxies from cutting it.
            kind, value = await asyncio.wait_for(running.queue.get(), _router.SSE_KEEPALIVE_S)
        except TimeoutError:
            yield None
            continue
        if kind == "event":
            if after is None or value.event_id > after:
                yield event_frame(value)
        elif kind == "result":
            yield Frame("result", value.to_dict())
            return
        else:
            yield Frame("error", problem_for(value)[1])
            return
