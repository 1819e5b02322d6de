"""OpenTelemetry traces: the spans of turns, model calls, tools, confirmations, commits and lifecycle.

Spans follow the OpenTelemetry GenAI semantic conventions (``invoke_agent``,
``chat {model}``, ``execute_tool {name}``) and go through the
``opentelemetry-api`` only: the library never sets a tracer provider, so
until the application installs an SDK every span is the API's no-op, and
without ``opentelemetry-api`` installed every helper here returns at once.
No attribute holds prompt, answer or tool-argument text unless the Hive was
started with ``trace_content=True`` (carried to a turn's spans in a context
variable), and no attribute ever holds a key.

The rest of the package calls this module at stable seams: the turn
coroutine (:class:`TurnTrace`), the model call, the tool call and the
confirmation wait (``traced_*`` wrappers of an awaitable), the store commit
(:func:`commit_span`, linked to the turns whose steps it carried) and
session activation and passivation. W3C trace context crosses processes
with :func:`inject` and :func:`extract`. :func:`exemplar` gives the current
trace id to a Prometheus histogram, so a slow bucket links to its trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # the "tracing" extra is not installed: every helper is a no-op
    otel_context = None  # type: ignore[assignment]
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]

from sessionhive.model.errors import InvalidConfig

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext, Tracer

__all__ = [
    "TRACER_NAME",
    "TurnTrace",
    "activation_begins",
    "activation_ends",
    "ainject_request",
    "commit_span",
    "configure_sdk",
    "current_context",
    "exemplar",
    "extract",
    "inject",
    "inject_request",
    "llm_event",
    "name_server_span",
    "note_step",
    "note_tool_outcome",
    "passivation",
    "remote_span",
    "server_spans",
    "tool_seconds",
    "traced_chat",
    "traced_confirmation",
    "traced_tool",
]

T = TypeVar("T")

log = logging.getLogger("sessionhive.tracing")

TRACER_NAME = "sessionhive"
# The providers that mean "no SDK here": until one of them is replaced, a span helper costs
# one check and starts nothing. A process sets its provider once, so the real tracer is kept.
_NO_SDK: tuple[type, ...] = (trace.ProxyTracerProvider, trace.NoOpTracerProvider) if trace is not None else ()
_sdk_tracer: Tracer | None = None
_UNKNOWN = object()
# The API can load a provider named by this variable on first use: then ask it, never skip.
_PROVIDER_FROM_ENVIRONMENT = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _live() -> Tracer | None:
    """The tracer once the application installed an SDK; ``None`` before (or without the API)."""
    global _sdk_tracer
    if _sdk_tracer is not None:
        return _sdk_tracer
    if trace is None:
        return None
    # The API's global, read directly: get_tracer_provider() looks the environment up on every
    # call, microseconds per span when no SDK is there. Only if that name is gone, ask the API.
    installed = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if installed is None and not _PROVIDER_FROM_ENVIRONMENT:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, _NO_SDK):
        return None
    _sdk_tracer = provider.get_tracer(TRACER_NAME)
    return _sdk_tracer


# Set in a turn's context when its Hive was started with trace_content=True: the
# turn's model, tool and confirmation spans then carry the text (GenAI content capture).
_content: contextvars.ContextVar[bool] = contextvars.ContextVar("sessionhive_trace_content", default=False)


class _ToolClock:
    """One tool call's timing: its span's start and the part of it spent waiting for a human."""

    __slots__ = ("human_wait", "outcome", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.human_wait = 0.0
        self.outcome = ""


_tool_clock: contextvars.ContextVar[_ToolClock | None] = contextvars.ContextVar(
    "sessionhive_tool_clock", default=None
)


# --------------------------------------------------------------------------- context


def current_context() -> Context | None:
    """The caller's trace context, to carry into work another thread or task does for it."""
    return otel_context.get_current() if otel_context is not None else None


def inject(carrier: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """The current trace context written into ``carrier`` as W3C ``traceparent``/``tracestate``."""
    carrier = {} if carrier is None else carrier
    if propagate is not None and trace is not None and trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
    return carrier


def inject_request(request: Any) -> None:
    """An httpx request hook: the request carries the caller's trace context (``traceparent``)."""
    inject(request.headers)


async def ainject_request(request: Any) -> None:
    """:func:`inject_request` for ``httpx.AsyncClient``, whose hooks are awaited."""
    inject(request.headers)


def extract(carrier: Mapping[str, str] | None) -> Context | None:
    """The trace context a W3C ``traceparent`` in ``carrier`` names; ``None`` without one."""
    if propagate is None or not carrier or "traceparent" not in carrier:
        return None
    return propagate.extract(dict(carrier))


def _traceparent(span_context: SpanContext | None) -> str | None:
    if span_context is None or not span_context.is_valid:
        return None
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def _span_context_of(traceparent: str | None) -> SpanContext | None:
    if not traceparent or trace is None:
        return None
    context = extract({"traceparent": traceparent})
    found = trace.get_current_span(context).get_span_context() if context is not None else None
    return found if found is not None and found.is_valid else None


def exemplar(span_context: SpanContext | None = None) -> dict[str, str] | None:
    """An OpenMetrics exemplar naming ``span_context`` (default: the current span), if it is sampled."""
    if trace is None or _live() is None:
        return None
    if span_context is None:
        span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return {"trace_id": f"{span_context.trace_id:032x}", "span_id": f"{span_context.span_id:016x}"}


def _json(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def _messages(messages: Sequence[Any]) -> str:
    """GenAI ``gen_ai.input.messages``/``output.messages``: role and text parts (content capture only)."""
    out = []
    for message in messages:
        parts: list[dict[str, Any]] = []
        text = getattr(message, "text", "")
        if text:
            parts.append({"type": "text", "content": text})
        for call in getattr(message, "tool_calls", ()):
            parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments})
        if getattr(message, "role", "") == "tool":
            parts = [{"type": "tool_call_response", "id": message.tool_call_id, "response": text}]
        out.append({"role": getattr(message, "role", ""), "parts": parts})
    return json.dumps(out, default=str, ensure_ascii=False)


# --------------------------------------------------------------------------- the turn


class TurnTrace:
    """The ``invoke_agent`` span of one turn, made where the session starts it.

    ``parent`` is the context of whoever asked for the turn (captured with
    the request); ``link`` the ``traceparent`` of the turn a resumed one
    continues. :attr:`span_context` is set once the span starts (on the
    turn loop) and read by the session for the store's links and the turn
    histogram's exemplar.
    """

    __slots__ = ("content", "link", "model", "parent", "provider", "session_id", "span_context", "turn_id")

    def __init__(
        self,
        session_id: str,
        turn_id: int,
        parent: Context | None = None,
        *,
        link: str | None = None,
        content: bool = False,
        provider: str = "",
        model: str = "",
    ) -> None:
        self.provider = provider
        self.model = model
        self.session_id = session_id
        self.turn_id = turn_id
        self.parent = parent
        self.link = link
        self.content = content
        self.span_context: SpanContext | None = None

    @property
    def traceparent(self) -> str | None:
        """The span as a W3C ``traceparent``: stored with the running turn, linked from its resumption."""
        return _traceparent(self.span_context)

    def exemplar(self) -> dict[str, str] | None:
        return exemplar(self.span_context) if self.span_context is not None else None

    def run(self, turn: Callable[[], Coroutine[Any, Any, T]], prompt: str = "") -> Coroutine[Any, Any, T]:
        """The coroutine ``turn()`` inside the span (``turn()`` itself when tracing is not installed).

        ``turn`` is made only once the span starts: a turn cancelled before
        it started leaves no coroutine that was never awaited.
        """
        tracer = _live()
        if tracer is None:
            return turn()
        return self._run(tracer, turn, prompt)

    async def _run(self, tracer: Tracer, turn: Callable[[], Coroutine[Any, Any, T]], prompt: str) -> T:
        assert trace is not None
        linked = _span_context_of(self.link)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": self.provider,  # the session's model provider, as the conventions ask
            "gen_ai.request.model": self.model,
            "gen_ai.conversation.id": self.session_id,
            "sessionhive.turn.id": self.turn_id,
        }
        if linked is not None:
            attributes["sessionhive.turn.resumed"] = True
        with tracer.start_as_current_span(
            "invoke_agent",
            context=self.parent,
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
            links=[trace.Link(linked, {"sessionhive.link": "resumes"})] if linked is not None else None,
        ) as span:
            self.span_context = span.get_span_context()
            _content.set(self.content)
            if self.content and prompt and span.is_recording():
                span.set_attribute("gen_ai.input.messages", _messages([_Text("user", prompt)]))
            outcome = await turn()
            if span.is_recording():
                _record_turn(span, outcome, self.content)
            return outcome


class _Text:
    """A message as :func:`_messages` reads it, made from a prompt or an answer."""

    __slots__ = ("role", "text", "tool_calls")

    def __init__(self, role: str, text: str, tool_calls: Sequence[Any] = ()) -> None:
        self.role = role
        self.text = text
        self.tool_calls = tool_calls


def _record_turn(span: Span, outcome: Any, content: bool) -> None:
    # One set_attributes call: the SDK takes its span lock once per call.
    status = getattr(outcome, "status", "ok")
    attributes: dict[str, Any] = {
        "sessionhive.turn.outcome": {"ok": "completed"}.get(status, status),
        "sessionhive.turn.stop_reason": getattr(outcome, "stop_reason", ""),
        "sessionhive.turn.rounds": int(getattr(outcome, "rounds", 0)),
    }
    usage = getattr(outcome, "usage", None)
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = int(usage.prompt_tokens)
        attributes["gen_ai.usage.output_tokens"] = int(usage.completion_tokens)
    if status != "ok":
        attributes["error.type"] = getattr(outcome, "error_kind", "") or status
    answer: str = getattr(outcome, "text", "")
    if content and answer:
        attributes["gen_ai.output.messages"] = _messages([_Text("assistant", answer)])
    span.set_attributes(attributes)
    if status == "error" and trace is not None:
        span.set_status(trace.StatusCode.ERROR, str(getattr(outcome, "error", ""))[:200])


# --------------------------------------------------------------------------- model calls and tools


async def traced_chat(llm: Any, request: Any, call: Awaitable[T]) -> T:
    """Await ``call`` (one model call of ``llm`` for ``request``) inside a ``chat {model}`` span."""
    tracer = _live()
    if tracer is None:
        return await call
    assert trace is not None
    model = str(getattr(llm, "model", ""))
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": str(getattr(llm, "provider", "")),
        "gen_ai.request.model": model,
        "gen_ai.conversation.id": str(getattr(request, "session_id", "")),
    }
    content = _content.get()
    if content:
        if getattr(request, "system", None):
            attributes["gen_ai.system_instructions"] = _json([{"type": "text", "content": request.system}])
        attributes["gen_ai.input.messages"] = _messages(getattr(request, "messages", ()))
    with tracer.start_as_current_span(
        f"chat {model}", kind=trace.SpanKind.CLIENT, attributes=attributes
    ) as span:
        response = await call
        if span.is_recording():
            answered: dict[str, Any] = {
                "gen_ai.response.model": model,
                "gen_ai.response.finish_reasons": (str(getattr(response, "stop_reason", "")),),
            }
            usage = getattr(response, "usage", None)
            if usage is not None:
                answered["gen_ai.usage.input_tokens"] = int(usage.prompt_tokens)
                answered["gen_ai.usage.output_tokens"] = int(usage.completion_tokens)
            if content:
                text, calls = str(getattr(response, "text", "")), getattr(response, "tool_calls", ())
                answered["gen_ai.output.messages"] = _messages([_Text("assistant", text, calls)])
            span.set_attributes(answered)
        return response


def llm_event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """An event on the current span (a retry, a wait for rate-limit capacity)."""
    if trace is None or _live() is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, dict(attributes or {}))


def _sandboxed(name: str, tools: Any) -> bool:
    if name != "bash":
        return False
    sandbox = getattr(tools, "bash_sandbox", None)
    return bool(getattr(sandbox, "available", False))


async def traced_tool(call: Any, tools: Any, run: Awaitable[T]) -> T:
    """Await ``run`` (deciding on and running ``call``) inside an ``execute_tool {name}`` span.

    The span holds the confirmation wait, if any, as a child; the tool's
    duration (:func:`tool_seconds`) leaves that wait out.
    """
    clock = _ToolClock()
    token = _tool_clock.set(clock)
    try:
        tracer = _live()
        if tracer is None:
            return await run
        assert trace is not None
        name = str(call.name)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": str(call.id),
            "gen_ai.tool.type": "function",
            "sessionhive.tool.sandboxed": _sandboxed(name, tools),
        }
        content = _content.get()
        if content:
            attributes["gen_ai.tool.call.arguments"] = _json(call.arguments)
        with tracer.start_as_current_span(f"execute_tool {name}", attributes=attributes) as span:
            result = await run
            if span.is_recording():
                outcome = clock.outcome or ("error" if getattr(result, "is_error", False) else "ok")
                ended: dict[str, Any] = {"sessionhive.tool.outcome": outcome}
                if outcome != "ok":
                    ended["error.type"] = outcome
                if content:
                    ended["gen_ai.tool.call.result"] = str(getattr(result, "output", ""))
                span.set_attributes(ended)
            return result
    finally:
        _tool_clock.reset(token)


def note_tool_outcome(outcome: str) -> None:
    """Tell the running tool call's span how it ended (``ok``, ``error``, ``denied``, ``rejected``...)."""
    clock = _tool_clock.get()
    if clock is not None:
        clock.outcome = outcome


def tool_seconds() -> float | None:
    """How long the running tool call took so far, its confirmation wait left out."""
    clock = _tool_clock.get()
    if clock is None:
        return None
    return max(0.0, time.perf_counter() - clock.started - clock.human_wait)


async def traced_confirmation(call: Any, waiting: Awaitable[T]) -> T:
    """Await ``waiting`` (a human decision about ``call``) inside a confirmation span."""
    started = time.perf_counter()
    clock = _tool_clock.get()
    try:
        tracer = _live()
        if tracer is None:
            return await waiting
        name = str(call.name)
        attributes = {"gen_ai.tool.name": name, "gen_ai.tool.call.id": str(call.id)}
        with tracer.start_as_current_span(f"await_confirmation {name}", attributes=attributes) as span:
            decision = await waiting
            if span.is_recording():
                decided: dict[str, Any] = {
                    "sessionhive.confirmation.decision": str(getattr(decision, "outcome", "")),
                    "sessionhive.confirmation.approved": bool(getattr(decision, "approved", False)),
                    "sessionhive.confirmation.wait_s": time.perf_counter() - started,
                }
                decided_by = getattr(decision, "decided_by", None)
                if decided_by:
                    decided["sessionhive.confirmation.decided_by"] = str(decided_by)
                span.set_attributes(decided)
            return decision
    finally:
        if clock is not None:
            clock.human_wait += time.perf_counter() - started


# --------------------------------------------------------------------------- the store and lifecycle

# Turns whose steps were handed to the store and not committed yet, by session id: the
# commit span links to them. Bounded per session: a link to the newest turns is enough.
_MAX_LINKS_PER_SESSION = 4
# Not session state: trace links, written by session actors (any thread) and taken by
# the persistence thread; a dict of lists changed from two threads needs the lock.
_links_lock = threading.Lock()
_uncommitted: dict[str, list[SpanContext]] = {}


def note_step(session_id: str, turn: TurnTrace | None) -> None:
    """``turn`` handed a step of ``session_id`` to the store: the next commit of it links to the turn."""
    span_context = turn.span_context if turn is not None else None
    if span_context is None or not span_context.is_valid or not span_context.trace_flags.sampled:
        return
    with _links_lock:
        found = _uncommitted.setdefault(session_id, [])
        if span_context not in found:
            found.append(span_context)
            del found[:-_MAX_LINKS_PER_SESSION]


@contextlib.contextmanager
def commit_span(store: str, session_ids: Sequence[str], changes: int) -> Iterator[None]:
    """A span around one store transaction, linked to the turns whose steps it carries."""
    tracer = _live()
    if tracer is None or trace is None:
        yield
        return
    links: list[Any] = []
    if _uncommitted:
        with _links_lock:
            for session_id in session_ids:
                for span_context in _uncommitted.pop(session_id, ()):
                    links.append(trace.Link(span_context, {"gen_ai.conversation.id": session_id}))
    attributes: dict[str, Any] = {
        "db.operation.name": "commit",
        "sessionhive.store": store,
        "sessionhive.store.sessions": len(session_ids),
        "sessionhive.store.changes": changes,
    }
    # A commit serves many turns: a root span of its own, linked to each of them.
    with tracer.start_as_current_span(
        "store commit", context=_ROOT, kind=trace.SpanKind.CLIENT, attributes=attributes, links=links
    ):
        yield


_ROOT: Any = otel_context.Context() if otel_context is not None else None

_activating: dict[str, int] = {}  # session id -> start (ns); set and popped by one supervisor thread


def activation_begins(session_id: str) -> None:
    """A stored session is being loaded to serve a call."""
    if _live() is not None:
        _activating[session_id] = time.time_ns()


def activation_ends(session_id: str, ok: bool = True) -> None:
    """The load of ``session_id`` is done: an ``activate_session`` span from its start to now."""
    started = _activating.pop(session_id, None)
    tracer = _live()
    if tracer is None or started is None:
        return
    span = tracer.start_span(
        "activate_session",
        context=_ROOT,
        attributes={"gen_ai.conversation.id": session_id, "sessionhive.session.loaded": ok},
        start_time=started,
    )
    span.end()


def passivation(session_id: str) -> None:
    """``session_id`` stopped to save memory (its state is in the store)."""
    tracer = _live()
    if tracer is not None:
        tracer.start_span(
            "passivate_session", context=_ROOT, attributes={"gen_ai.conversation.id": session_id}
        ).end()


# --------------------------------------------------------------------------- HTTP service

# The SERVER span of the request being served, so the router can name it once it knows the route.
_server_span: contextvars.ContextVar[Any] = contextvars.ContextVar("sessionhive_server_span", default=None)

AsgiApp = Callable[[Any, Any, Any], Awaitable[None]]


def server_spans(app: AsgiApp) -> AsgiApp:
    """Wrap an ASGI app: each HTTP request is a SERVER span, the child of its ``traceparent`` if any.

    Whatever the request starts (a turn) is a child of that span, so one
    trace holds the caller, the service and the turn.
    """
    if trace is None:
        return app

    async def traced(scope: Any, receive: Any, send: Any) -> None:
        tracer = _live()
        if tracer is None:
            await app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key in (b"traceparent", b"tracestate")
        }
        method = str(scope.get("method", "HTTP"))
        attributes = {"http.request.method": method, "url.path": str(scope.get("path", ""))}
        assert trace is not None
        with tracer.start_as_current_span(
            method, context=extract(carrier), kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:
            token = _server_span.set(span)
            try:
                await app(scope, receive, send)
            finally:
                _server_span.reset(token)

    return traced


@contextlib.contextmanager
def remote_span(name: str, parent: Context | None, attributes: Mapping[str, Any]) -> Iterator[None]:
    """A SERVER span for work another process asked for, the child of its ``parent`` context."""
    tracer = _live()
    if tracer is None or trace is None:
        yield
        return
    with tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.SERVER, attributes=dict(attributes)
    ):
        yield


def name_server_span(method: str, route: str, status: int) -> None:
    """Name the request's SERVER span by its route (``POST /v1/sessions/{session_id}/turns``) and status."""
    span = _server_span.get()
    if span is None or not span.is_recording():
        return
    span.update_name(f"{method} {route}")
    span.set_attributes({"http.route": route, "http.response.status_code": status})
    if status >= 500 and trace is not None:
        span.set_status(trace.StatusCode.ERROR)


# --------------------------------------------------------------------------- the serve process's SDK


def configure_sdk(
    endpoint: str | None = None, *, service_name: str = "sessionhive"
) -> Callable[[], None] | None:
    """Install the OpenTelemetry SDK with a batching OTLP/HTTP exporter, for ``sessionhive serve`` only.

    ``endpoint`` is the collector's base URL (``http://127.0.0.1:4318``;
    traces go to ``/v1/traces``); without it, the standard
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``/``OTEL_EXPORTER_OTLP_ENDPOINT``
    variables decide, and with neither nothing is installed. The other
    ``OTEL_*`` variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, headers) apply as the SDK reads
    them. Returns what flushes and shuts the provider down, or ``None``.
    """
    configured = (
        endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if not configured or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or trace is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        wanted = "pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
        if endpoint:
            raise InvalidConfig(
                f"--otlp-endpoint needs the OpenTelemetry SDK and exporter: {wanted} ({exc})"
            ) from None
        log.warning(
            "OTEL_EXPORTER_OTLP_*ENDPOINT is set but the SDK is missing (%s): no traces are sent", wanted
        )
        return None

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    # An explicit endpoint is the collector's base URL; the variables are read by the exporter itself.
    exporter = (
        OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces") if endpoint else OTLPSpanExporter()
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider.shutdown
