"""Tool argument schemas are JSON Schema, checked by jsonschema: all of it counts, and errors stay short."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionhive import Hive, InvalidConfig, Reply, ScriptedLlm, ToolCall, ToolExecutor, ToolResult

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
        "lines": {
            "type": "array",
            "items": {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]},
        },
        "speed": {"enum": ["standard", "express"]},
    },
    "required": ["sku", "quantity"],
    "additionalProperties": False,
}


def order(sku: str, quantity: int, lines: list[dict[str, str]] | None = None, speed: str = "standard") -> str:
    return f"ordered {quantity} x {sku} ({speed}, {len(lines or [])} line(s))"


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[ToolExecutor]:
    with ToolExecutor(tmp_path) as tools:
        tools.register("order", order, ORDER_SCHEMA)
        yield tools


def call(executor: ToolExecutor, arguments: dict[str, Any] | str) -> ToolResult:
    return asyncio.run(executor.execute("order", arguments))


def test_valid_arguments_reach_the_tool(executor: ToolExecutor) -> None:
    result = call(executor, {"sku": "ABC-123", "quantity": 2.0, "lines": [{"note": "gift"}]})
    assert result == ToolResult("ordered 2 x ABC-123 (standard, 1 line(s))")  # 2.0 is the integer 2


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"sku": "ABC-123", "quantity": 0}, "argument 'quantity' must be >= 1, got 0"),
        ({"sku": "ABC-123", "quantity": 101}, "argument 'quantity' must be <= 100, got 101"),
        ({"sku": "abc", "quantity": 1}, "argument 'sku': 'abc' does not match"),
        (
            {"sku": "ABC-123", "quantity": 1, "lines": [{"note": 5}]},
            "argument 'lines/0/note' must be string, got 5",
        ),
        (
            {"sku": "ABC-123", "quantity": 1, "lines": [{}]},
            "argument 'lines/0': 'note' is a required property",
        ),
        ({"sku": "ABC-123", "quantity": 1, "speed": "warp"}, 'must be one of ["standard", "express"]'),
        ({"quantity": "many"}, "missing required argument(s) 'sku'; argument 'quantity' must be integer"),
    ],
)
def test_the_whole_schema_is_enforced_in_one_short_sentence(
    executor: ToolExecutor, arguments: dict[str, Any], problem: str
) -> None:
    result = call(executor, arguments)
    assert result.is_error
    assert problem in result.output
    assert result.output.startswith("invalid arguments for tool 'order': ")
    assert result.output.endswith(
        "sku (string, required), quantity (integer, required), lines (array), speed"
    )
    assert len(result.output) < 400 and "Failed validating" not in result.output  # no jsonschema dump


def test_a_long_value_is_quoted_short(executor: ToolExecutor) -> None:
    result = call(executor, {"sku": "X" * 5000, "quantity": 1})
    assert result.is_error and len(result.output) < 400


def test_a_schema_that_is_not_json_schema_is_refused_at_registration(tmp_path: Path) -> None:
    with ToolExecutor(tmp_path) as tools:
        with pytest.raises(InvalidConfig, match="not valid JSON Schema at properties/sku"):
            tools.register("bad", order, {**ORDER_SCHEMA, "properties": {"sku": {"type": "strang"}}})
        with pytest.raises(InvalidConfig, match="not valid JSON Schema"):
            tools.register("bad2", order, {**ORDER_SCHEMA, "required": "sku"})


def test_a_model_sees_the_error_and_retries(tmp_path: Path) -> None:
    """Through a real Hive: the bad call's error reaches the model, whose corrected call works."""
    llm = ScriptedLlm(
        [
            Reply("ordering", [ToolCall("order", {"sku": "ABC-123", "quantity": -3})]),
            Reply("again", [ToolCall("order", {"sku": "ABC-123", "quantity": 3})]),
            Reply("done"),
        ]
    )
    with ToolExecutor(tmp_path) as tools:
        tools.register("order", order, ORDER_SCHEMA)
        with Hive.start(store="memory", llm=llm, workspace=tmp_path, tools=tools) as hive:
            hive.create_session("s")
            result = hive.generate("s", "order three")
    outputs = [(m.is_error, m.text) for m in result.messages if m.role == "tool"]
    assert outputs[0][0] and "argument 'quantity' must be >= 1, got -3" in outputs[0][1]
    assert outputs[1] == (False, "ordered 3 x ABC-123 (standard, 0 line(s))")
