"""Tool argument schemas: derived from signatures, checked at registration, enforced per call.

Only what an LLM commonly gets wrong is enforced (the arguments are an
object, required keys are present, no unknown keys, top-level JSON types and
enums); a full JSON Schema validator would add a dependency for little gain,
since a tool still sees and rejects values it cannot use.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sessionhive.model.errors import InvalidConfig
from sessionhive.model.messages import ToolCall
from sessionhive.tools._common import ToolError

__all__ = ["CONTEXT_PARAMETER", "ArgumentSpec"]

CONTEXT_PARAMETER = "context"

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}
_PYTHON_TYPES: dict[object, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    tuple: "array",
    type(None): "null",
}


def _json_type(annotation: object) -> str | list[str] | None:
    """The JSON type of a parameter annotation, or ``None`` when it has no simple one."""
    if annotation in _PYTHON_TYPES:
        return _PYTHON_TYPES[annotation]
    origin = typing.get_origin(annotation)
    if origin in _PYTHON_TYPES:
        return _PYTHON_TYPES[origin]
    if origin in (typing.Union, types.UnionType):
        names: list[str] = []
        for member in typing.get_args(annotation):
            name = _json_type(member)
            if not isinstance(name, str):
                return None
            names.append(name)
        return names
    return None


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        # An annotation naming something not importable here: the parameters still count.
        return inspect.signature(func)


def _type_names(types_: object) -> list[str]:
    return list(types_) if isinstance(types_, list) else [str(types_)]


def _value_matches(value: Any, type_name: str) -> bool:
    if type_name not in _JSON_TYPES:
        return True  # a schema type this checker does not know: let the tool judge
    if isinstance(value, bool):
        return type_name == "boolean"
    if type_name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES[type_name])


@dataclass(frozen=True)
class ArgumentSpec:
    """How to check one tool's arguments: compiled once, at registration."""

    tool: str
    schema: Mapping[str, Any]
    required: tuple[str, ...]
    accepted: frozenset[str] | None  # None: any key is passed through
    wants_context: bool

    @classmethod
    def build(cls, tool: str, func: Callable[..., Any], schema: Mapping[str, Any] | None) -> ArgumentSpec:
        """Check ``schema`` against ``func`` (deriving it when ``None``); ``InvalidConfig`` on a mismatch."""
        try:
            parameters = _signature(func).parameters
        except ValueError as exc:
            raise InvalidConfig(f"tool {tool!r}: cannot read the signature of {func!r}: {exc}") from None
        wants_context = CONTEXT_PARAMETER in parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        named = {
            name: p
            for name, p in parameters.items()
            if name != CONTEXT_PARAMETER
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        for name, p in parameters.items():
            if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is inspect.Parameter.empty:
                raise InvalidConfig(
                    f"tool {tool!r}: parameter {name!r} is positional-only; tools are called with "
                    "keyword arguments, so make it a normal or keyword-only parameter"
                )
        if wants_context and parameters[CONTEXT_PARAMETER].kind is inspect.Parameter.POSITIONAL_ONLY:
            raise InvalidConfig(f"tool {tool!r}: the 'context' parameter must accept a keyword argument")
        if schema is None:
            schema = cls._derive(named, takes_any)
        else:
            try:
                schema = json.loads(json.dumps(schema))  # a private copy that is surely plain JSON
            except (TypeError, ValueError) as exc:
                raise InvalidConfig(f"tool {tool!r}: schema must be plain JSON: {exc}") from None
            cls._check_schema(tool, schema)
        required = tuple(schema.get("required", ()))
        properties: Mapping[str, Any] = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            accepted: frozenset[str] | None = frozenset(properties)
        elif takes_any:
            accepted = None
        else:
            accepted = frozenset(named)
        for name in required:
            if not takes_any and name not in named:
                raise InvalidConfig(f"tool {tool!r}: the schema requires {name!r}, which the function lacks")
        for name, p in named.items():
            if p.default is inspect.Parameter.empty and name not in required:
                raise InvalidConfig(
                    f"tool {tool!r}: parameter {name!r} has no default, so the schema must list it "
                    "in 'required'"
                )
        return cls(tool, schema, required, accepted, wants_context)

    @staticmethod
    def _derive(named: Mapping[str, inspect.Parameter], takes_any: bool) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for name, p in named.items():
            json_type = _json_type(p.annotation)
            properties[name] = {} if json_type is None else {"type": json_type}
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "required": [n for n, p in named.items() if p.default is inspect.Parameter.empty],
        }
        if not takes_any:
            schema["additionalProperties"] = False
        return schema

    @staticmethod
    def _check_schema(tool: str, schema: Any) -> None:
        if not isinstance(schema, dict):
            raise InvalidConfig(f"tool {tool!r}: schema must be a JSON schema object (a dict)")
        if schema.get("type", "object") != "object":
            raise InvalidConfig(
                f"tool {tool!r}: schema 'type' must be 'object' (tool arguments are an object)"
            )
        schema.setdefault("type", "object")
        properties = schema.get("properties", {})
        if not isinstance(properties, dict) or not all(isinstance(v, dict) for v in properties.values()):
            raise InvalidConfig(f"tool {tool!r}: schema 'properties' must map names to schema objects")
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
            raise InvalidConfig(f"tool {tool!r}: schema 'required' must be a list of argument names")

    def describe(self) -> str:
        """The arguments in one line, for error messages: ``path (string, required), limit (integer)``."""
        parts = []
        for name, prop in self.schema.get("properties", {}).items():
            details = [" or ".join(_type_names(prop["type"]))] if "type" in prop else []
            if name in self.required:
                details.append("required")
            parts.append(f"{name} ({', '.join(details)})" if details else name)
        return ", ".join(parts) if parts else "no arguments"

    def parse(self, arguments: object) -> dict[str, Any]:
        """The keyword arguments for the tool; a :class:`ToolError` saying what to fix otherwise."""
        if isinstance(arguments, dict | str):
            try:
                decoded = dict(ToolCall(self.tool, arguments).decoded_arguments())
            except ValueError as exc:
                raise self._error(str(exc)) from None
        else:
            raise self._error(f"tool arguments must be a JSON object, got {type(arguments).__name__}")
        if self.wants_context and CONTEXT_PARAMETER in decoded:
            raise self._error(f"{CONTEXT_PARAMETER!r} is reserved and cannot be passed as an argument")
        missing = [name for name in self.required if name not in decoded]
        if missing:
            raise self._error(f"missing required argument(s) {', '.join(map(repr, missing))}")
        if self.accepted is not None:
            unknown = sorted(set(decoded) - self.accepted)
            if unknown:
                raise self._error(f"unknown argument(s) {', '.join(map(repr, unknown))}")
        properties: Mapping[str, Any] = self.schema.get("properties", {})
        for name, value in decoded.items():
            prop = properties.get(name, {})
            if "type" in prop:
                names = _type_names(prop["type"])
                if not any(_value_matches(value, t) for t in names):
                    got = json.dumps(value)
                    got = got if len(got) <= 40 else got[:37] + "..."
                    raise self._error(f"argument {name!r} must be {' or '.join(names)}, got {got}")
                if isinstance(value, float) and "integer" in names and "number" not in names:
                    decoded[name] = int(value)
            if "enum" in prop and value not in prop["enum"]:
                raise self._error(f"argument {name!r} must be one of {json.dumps(prop['enum'])}")
        return decoded

    def _error(self, problem: str) -> ToolError:
        return ToolError(
            f"invalid arguments for tool {self.tool!r}: {problem}. "
            f"Call it again with a JSON object of its arguments: {self.describe()}"
        )
