"""The runs resource: start a run and hang up, read it, follow or resume its events, cancel it.

A run id names its session (``session_of_run``), so ``runs/{run_id}`` routes
check the caller may see that session exactly as the session routes do; a
run of another tenant answers 404 ``RunNotFound``, as a run that never was.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sessionhive import InvalidConfig, SessionPaused
from sessionhive.api import DEFAULT_ON_BUSY
from sessionhive.model.events import TERMINAL_EVENTS
from sessionhive.model.runs import OnBusy, Run, Webhook, check_idempotency_key, check_on_busy

from .._bodies import prompt_from_json
from .._router import Call, EventStream, Frame, Router, StreamEnd, event_frame, keep_alive
from .._schemas import BOOL, QUOTA, RESUME_PARAMS, RUN, RUN_PARAMS, RUN_START, merge, obj, ref
from .._view import Turn
from ..problems import HttpProblem

__all__ = ["router", "run_options"]

router = Router()
_S = "sessions/{session_id}"
_R = "runs/{run_id}"


def run_options(call: Call, body: dict[str, Any]) -> tuple[str | None, OnBusy]:
    """The request's ``Idempotency-Key`` header and ``on_busy`` body field, checked (422 if wrong)."""
    key = check_idempotency_key(call.request.headers.get("idempotency-key"))
    return key, check_on_busy(body.get("on_busy", DEFAULT_ON_BUSY))


def _webhook(call: Call, value: Any) -> Webhook | None:
    """The body's ``webhook``, if the operator allows its URL (``serve --allow-webhook-url``)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"url"} or not isinstance(value["url"], str):
        raise InvalidConfig('webhook must be {"url": "<an allowed URL>"}')
    # 403, as for a model endpoint outside --allow-base-url: the body is well formed, the operator
    # has not allowed where it points.
    allowed = call.app.webhook_urls
    if allowed is None:
        raise HttpProblem(
            403, "WebhookNotAllowed", "webhooks are not allowed: the service has no --allow-webhook-url"
        )
    if not allowed.allows_explicitly(value["url"]):
        raise HttpProblem(
            403,
            "WebhookNotAllowed",
            "webhooks are not allowed to that URL: it matches no --allow-webhook-url",
        )
    # No secret over HTTP: the service signs with its own key (serve --webhook-secret-file).
    return Webhook(value["url"])


@router.post(
    _S + "/runs",
    scope="write",
    body="StartRun",
    ok=202,
    result=ref("Run"),
    errors=merge(QUOTA, RUN_START),
    query=RUN_PARAMS,
)
async def start_run(call: Call) -> Any:
    """Start a run and answer at once (202, the Run); `Idempotency-Key` names it within its session"""
    app, sid = call.app, call.session_id
    if app.draining:
        raise HttpProblem(503, "Draining", "the service is draining before it stops; no new runs")
    body = await app.body(call.request)
    prompt = prompt_from_json(body.get("prompt"), "run")
    key, on_busy = run_options(call, body)
    webhook = _webhook(call, body.get("webhook"))
    app.tenancy.turn_started(call.owner)
    try:
        run = await app.hive.start_run(
            sid,
            prompt,
            idempotency_key=key,
            on_busy=on_busy,
            webhook=webhook,
            output_schema=body.get("output_schema"),
        )
    except BaseException as exc:
        app.tenancy.turn_ended(call.owner)
        if isinstance(exc, SessionPaused):
            app.view.paused.add(sid)
        raise
    _watch_run(call, run)
    await app.tenancy.record(call.principal, "run", sid, call.owner, {"run_id": run.run_id})
    return run.to_dict()


def _watch_run(call: Call, run: Run) -> None:
    """Follow a background run to its end: the console's view sees its events, the drain waits for it.

    Counted against the tenant's running turns until it ends, once: a retry with the
    same key answers the run already followed and counts nothing more.
    """
    app, tenant = call.app, call.owner
    if run.done or any(t.run_id == run.run_id for t in app.turns):
        app.tenancy.turn_ended(tenant)
        return
    running = Turn(run.session_id, tenant, run_id=run.run_id)
    app.view.turn_started(run.session_id)
    app.turns.add(running)

    async def follow() -> None:
        try:
            with contextlib.suppress(Exception):  # the run's record keeps its outcome either way
                async for event in app.hive.run_events(run.run_id):
                    app.view.observe(event)
        finally:
            app.view.turn_ended(run.session_id)
            app.tenancy.turn_ended(tenant)
            app.turns.discard(running)
            if not running.outcome.done():
                running.outcome.cancel()

    running.task = running.outcome.get_loop().create_task(follow())


@router.get(_S + "/runs", scope="read", result=obj(runs={"type": "array", "items": ref("Run")}))
async def list_runs(call: Call) -> Any:
    """The session's runs: unfinished ones and the finished ones it keeps, oldest first"""
    return {"runs": [run.to_dict() for run in await call.app.hive.list_runs(call.session_id)]}


@router.get(_R, scope="read", result=ref("Run"), errors=RUN)
async def get_run(call: Call) -> Any:
    """A run: its status, prompt and outcome"""
    return (await call.app.hive.get_run(call.run_id)).to_dict()


@router.post(_R + "/cancel", scope="write", result=obj(cancelled=BOOL), errors=RUN)
async def cancel_run(call: Call) -> Any:
    """Cancel a run: `cancelled` is true if it was queued or running"""
    cancelled = await call.app.hive.cancel_run(call.run_id)
    await call.app.audit(call, "cancel_run", {"run_id": call.run_id, "cancelled": cancelled})
    return {"cancelled": cancelled}


@router.get(
    _R + "/events",
    scope="read",
    sse=True,
    errors=merge(RUN, {"400": "InvalidBody: Last-Event-ID or after is not an event id"}),
    query=RESUME_PARAMS,
)
async def run_events(call: Call) -> Any:
    """The run's events as server-sent events, each with its `id:`, ending with its terminal event;
    `Last-Event-ID` (or `after=`) resumes after that event"""
    app, run_id = call.app, call.run_id
    after = call.last_event_id()
    await app.hive.get_run(run_id)  # a 404 now, before the stream's 200 is sent
    end = StreamEnd()
    app.subscriptions.add(end)

    async def follow() -> AsyncIterator[Frame | None]:
        ended = False
        try:
            async for event in keep_alive(app.hive.run_events(run_id, after=after), end):
                if event is None:
                    yield None
                    continue
                ended = isinstance(event, TERMINAL_EVENTS)
                yield event_frame(event)
            if not ended and end.closed.is_set():
                # Shut down before the run ended: the last frame says so, as /events' does. (A run
                # whose events all lie before `after` just ends: there is nothing more to send.)
                yield Frame("end", {"run_id": run_id, "draining": app.draining})
        finally:
            app.subscriptions.discard(end)

    return EventStream(follow())
