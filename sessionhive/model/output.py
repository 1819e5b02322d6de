"""Structured output: the schema a turn's final answer must match, and how an answer is checked.

``generate(..., output_schema=...)`` takes a JSON Schema (a dict) or a
pydantic model class (anything with ``model_json_schema`` and
``model_validate_json``: pydantic is not imported here). The turn asks the
model for JSON in the provider's native mode, checks the final answer, asks
once more with the error when it does not match, and hands back the value:
the dict (or list...) for a schema, an instance for a model class.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from sessionhive.model.errors import InvalidConfig
from sessionhive.model.messages import AgentResult

__all__ = [
    "OutputSchema",
    "OutputSpec",
    "output_spec",
    "rebuild_output",
    "repair_prompt",
    "schema_to_send",
]

#: What ``output_schema=`` takes: a JSON Schema, or a pydantic ``BaseModel`` subclass.
OutputSchema: TypeAlias = Mapping[str, Any] | type[Any]

# OpenAI's rule for a response_format / tool name; Anthropic's tool names fit it too.
_NAME_UNFIT = re.compile(r"[^a-zA-Z0-9_-]")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*)\n```$", re.DOTALL)


@dataclass(frozen=True)
class OutputSpec:
    """A turn's output schema, checked once: its name, its JSON Schema, and the model class if given."""

    name: str
    schema: Mapping[str, Any]
    model: type[Any] | None = field(default=None, compare=False)

    @property
    def strict(self) -> bool:
        """Whether the schema fits OpenAI's strict mode (closed objects, every property required)."""
        return _strict_fit(self.schema)

    def validate(self, text: str) -> Any:
        """The answer ``text`` parsed and checked; ``ValueError`` saying what is wrong otherwise."""
        stripped = text.strip()
        fenced = _FENCE.match(stripped)
        if fenced:  # a model without a native JSON mode may wrap its JSON in a code fence
            stripped = fenced.group(1)
        if self.model is not None:
            return self.model.model_validate_json(stripped)  # pydantic's ValidationError is a ValueError
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the answer is not JSON: {exc}") from None
        error = best_match(Draft202012Validator(dict(self.schema)).iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(the root)"
            raise ValueError(f"at {where}: {error.message}")
        return value


def output_spec(schema: OutputSchema | None) -> OutputSpec | None:
    """``schema`` checked; :class:`InvalidConfig` if it is neither a valid JSON Schema nor a model class."""
    if schema is None:
        return None
    if isinstance(schema, type):
        if not (hasattr(schema, "model_json_schema") and hasattr(schema, "model_validate_json")):
            raise InvalidConfig(
                f"output_schema must be a JSON Schema dict or a pydantic BaseModel subclass, got {schema!r}"
            )
        return OutputSpec(_name(schema.__name__), schema.model_json_schema(), schema)
    if not isinstance(schema, Mapping):
        raise InvalidConfig(
            f"output_schema must be a JSON Schema dict or a pydantic model class, got {schema!r}"
        )
    try:
        Draft202012Validator.check_schema(dict(schema))
    except SchemaError as exc:
        raise InvalidConfig(f"output_schema is not a valid JSON Schema: {exc.message}") from None
    title = schema.get("title")
    return OutputSpec(_name(title if isinstance(title, str) else "output"), dict(schema))


def repair_prompt(problem: str) -> str:
    """What the model is told when its answer did not match the schema (the one repair round)."""
    return (
        f"Your answer does not match the required JSON schema: {problem}\n"
        "Answer again with only a JSON value that matches the schema."
    )


def _name(raw: str) -> str:
    return _NAME_UNFIT.sub("_", raw)[:64] or "output"


def _strict_fit(schema: Any) -> bool:
    if isinstance(schema, list):
        return all(_strict_fit(item) for item in schema)
    if not isinstance(schema, Mapping):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False or set(schema.get("required", ())) != set(
            properties
        ):
            return False
    return all(_strict_fit(value) for key, value in schema.items() if key not in ("enum", "const", "default"))


def schema_to_send(schema: OutputSchema | None) -> tuple[dict[str, Any] | None, type[Any] | None]:
    """For a facade that runs the turn elsewhere (a shard, a service): the JSON Schema to send
    (a class cannot travel), and the model class to rebuild the answer into (see :func:`rebuild_output`)."""
    spec = output_spec(schema)
    if spec is None:
        return None, None
    return dict(spec.schema), spec.model


def rebuild_output(result: AgentResult, model: type[Any] | None) -> AgentResult:
    """``result`` whose JSON ``output`` came back from elsewhere, as an instance of ``model`` if given."""
    if model is None or result.output is None or isinstance(result.output, model):
        return result
    return replace(result, output=model.model_validate(result.output))


def output_model(schema: OutputSchema | None) -> type[Any] | None:
    """The model class ``schema`` is, if it is one (a dict gives ``None``)."""
    return schema_to_send(schema)[1]
