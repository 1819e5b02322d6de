"""The OpenTelemetry SDK for tests: one process-wide provider, spans kept in memory, read as a tree.

The API lets a process set its tracer provider once, so every test module
that reads spans shares this one; each test clears the exporter first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_exporter = InMemorySpanExporter()


def memory_exporter() -> InMemorySpanExporter:
    """The exporter every span of this process reaches (installed on first use), cleared."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    _exporter.clear()
    return _exporter


@dataclass
class Node:
    span: ReadableSpan
    children: list[Node] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.span.name

    def shape(self) -> tuple[str, tuple[object, ...]]:
        """The subtree as (name, children's shapes), children in start order."""
        ordered = sorted(self.children, key=lambda n: n.span.start_time or 0)
        return (self.name, tuple(child.shape() for child in ordered))


def tree(spans: Sequence[ReadableSpan], root_name: str) -> Node:
    """The one span named ``root_name`` with its descendants."""
    nodes = {span.context.span_id: Node(span) for span in spans if span.context is not None}
    for node in nodes.values():
        parent = node.span.parent
        if parent is not None and parent.span_id in nodes:
            nodes[parent.span_id].children.append(node)
    roots = [node for node in nodes.values() if node.name == root_name]
    assert len(roots) == 1, [span.name for span in spans]
    return roots[0]
