"""A tiny OTLP/HTTP trace receiver, run as its own process: what a collector would get, read back as JSON.

``python -m tests.metrics.otlp_receiver`` listens on 127.0.0.1 (a free port, printed
as ``listening on http://127.0.0.1:PORT``). ``POST /v1/traces`` takes an
``ExportTraceServiceRequest`` in protobuf, decoded with ``opentelemetry-proto``
exactly as an OpenTelemetry Collector decodes it. ``GET /spans?name=N&count=C&timeout=T``
answers the spans received so far as JSON once ``C`` of them are named ``N``
(or ``T`` seconds passed): the test waits on the receiver, never on a sleep.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["otlp_receiver", "received_spans"]

_spans: list[dict[str, Any]] = []
_arrived = threading.Condition()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _decode(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    out = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "kind": span.kind,
                        "service": resource.get("service.name"),
                        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                        "links": [link.span_id.hex() for link in span.links],
                    }
                )
    return out


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with _arrived:
            _spans.extend(_decode(request))
            _arrived.notify_all()
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        name = query.get("name", [""])[0]
        count = int(query.get("count", ["1"])[0])
        timeout = float(query.get("timeout", ["30"])[0])
        with _arrived:
            _arrived.wait_for(lambda: sum(s["name"] == name for s in _spans) >= count, timeout)
            body = json.dumps(_spans).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def otlp_receiver() -> Iterator[str]:
    """A receiver process for the block; its base URL (``/v1/traces`` is where exporters send)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.metrics.otlp_receiver"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield line.split()[-1]
    finally:
        process.kill()
        process.wait()


def received_spans(url: str, name: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
    """Every span the receiver at ``url`` has, once ``count`` are named ``name`` (or after ``timeout``)."""
    query = f"{url}/spans?name={quote(name)}&count={count}&timeout={timeout}"
    with urllib.request.urlopen(query, timeout=timeout + 10) as answer:
        spans: list[dict[str, Any]] = json.loads(answer.read())
    return spans


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
