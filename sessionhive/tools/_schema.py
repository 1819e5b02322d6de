"""Tool argument schemas: derived from signatures, checked at registration, enforced per call by jsonschema.

A schema is checked against its JSON Schema metaschema (Draft 2020-12) and
against the function's signature when the tool is registered; every call's
arguments are validated, and the first problems are turned into one short
sentence the model can act on (what is wrong, then the arguments the tool
takes). Validation is on every tool call's path, so valid arguments are
recognised by :mod:`jsonschema_rs` (compiled, about 0.1 us); only invalid
ones go through :mod:`jsonschema`, whose errors carry the paths and
keywords the sentence is made of.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from sessionhive.model.errors import InvalidConfig
from sessionhive.model.messages import ToolCall
from sessionhive.tools._common import ToolError

__all__ = ["CONTEXT_PARAMETER", "ArgumentSpec"]

CONTEXT_PARAMETER = "context"

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
#: A value quoted in an error message is cut to this many characters.
_QUOTE_LIMIT = 40
#: At most this many problems are named in one error message.
_PROBLEMS_SHOWN = 3


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
    return [str(t) for t in types_] if isinstance(types_, list) else [str(types_)]


def _quote(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 3] + "..."


def _where(error: ValidationError) -> str:
    """``'path'`` for a top-level argument, ``'items/2/name'`` below it."""
    return "'" + "/".join(str(part) for part in error.absolute_path) + "'"


_BOUNDS = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}


def _problem(error: ValidationError) -> str:
    """One validation error as a short phrase a model can act on."""
    where = _where(error)
    got = _quote(error.instance)
    if error.validator == "type":
        return f"argument {where} must be {' or '.join(_type_names(error.validator_value))}, got {got}"
    if error.validator == "enum":
        return f"argument {where} must be one of {json.dumps(error.validator_value)}"
    if error.validator in _BOUNDS:
        return f"argument {where} must be {_BOUNDS[str(error.validator)]} {error.validator_value}, got {got}"
    # jsonschema's own sentence quotes the value in full: keep it short.
    message = error.message if len(error.message) <= 2 * _QUOTE_LIMIT else error.message[:77] + "..."
    return f"argument {where}: {message}" if error.absolute_path else message


@dataclass(frozen=True)
class ArgumentSpec:
    """How to check one tool's arguments: compiled once, at registration."""

    tool: str
    schema: Mapping[str, Any]
    required: tuple[str, ...]
    accepted: frozenset[str] | None  # None: any key is passed through
    wants_context: bool
    validator: Draft202012Validator
    fast_validator: Any  # jsonschema_rs.Draft202012Validator: is_valid only

    @classmethod
    def build(cls, tool: str, func: Callable[..., Any], schema: Mapping[str, Any] | None) -> ArgumentSpec:
        """Check ``schema`` against ``func`` (deriving it when ``None``); ``InvalidConfig`` on a mismatch."""
        parameters = cls._parameters(tool, func)
        wants_context = CONTEXT_PARAMETER in parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        named = {
            name: p
            for name, p in parameters.items()
            if name != CONTEXT_PARAMETER
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
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
        return cls(
            tool,
            schema,
            required,
            accepted,
            wants_context,
            Draft202012Validator(schema),
            jsonschema_rs.Draft202012Validator(dict(schema)),
        )

    @staticmethod
    def _parameters(tool: str, func: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
        """The function's parameters, refused when a tool call (keyword arguments) cannot fill them."""
        try:
            parameters = _signature(func).parameters
        except ValueError as exc:
            raise InvalidConfig(f"tool {tool!r}: cannot read the signature of {func!r}: {exc}") from None
        for name, p in parameters.items():
            if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is inspect.Parameter.empty:
                raise InvalidConfig(
                    f"tool {tool!r}: parameter {name!r} is positional-only; tools are called with "
                    "keyword arguments, so make it a normal or keyword-only parameter"
                )
        context = parameters.get(CONTEXT_PARAMETER)
        if context is not None and context.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise InvalidConfig(f"tool {tool!r}: the 'context' parameter must accept a keyword argument")
        return parameters

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
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
            raise InvalidConfig(
                f"tool {tool!r}: schema is not valid JSON Schema at {where}: {exc.message}"
            ) from None

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
        fits = self.fast_validator.is_valid(decoded) and (
            self.accepted is None or set(decoded) <= self.accepted
        )
        problems = [] if fits else self._problems(decoded)
        if problems:
            raise self._error("; ".join(problems[:_PROBLEMS_SHOWN]))
        properties: Mapping[str, Any] = self.schema.get("properties", {})
        for name, value in decoded.items():
            # JSON has one number type: 2.0 is a valid integer, and the tool gets the int 2.
            names = _type_names(properties.get(name, {}).get("type", []))
            if isinstance(value, float) and "integer" in names and "number" not in names:
                decoded[name] = int(value)
        return decoded

    def _problems(self, decoded: Mapping[str, Any]) -> list[str]:
        """What is wrong with ``decoded``, most useful first: missing, unknown, then each value."""
        missing = [name for name in self.required if name not in decoded]
        problems: list[str] = []
        if missing:
            problems.append(f"missing required argument(s) {', '.join(map(repr, missing))}")
        if self.accepted is not None:
            unknown = sorted(set(decoded) - self.accepted)
            if unknown:
                problems.append(f"unknown argument(s) {', '.join(map(repr, unknown))}")
        top_level = {"required", "additionalProperties"}  # said above, in the model's words
        errors: Iterable[ValidationError] = sorted(
            self.validator.iter_errors(decoded),
            key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))),
        )
        for error in errors:
            if not error.absolute_path and error.validator in top_level:
                continue
            problems.append(_problem(error))
        return problems

    def _error(self, problem: str) -> ToolError:
        return ToolError(
            f"invalid arguments for tool {self.tool!r}: {problem}. "
            f"Call it again with a JSON object of its arguments: {self.describe()}"
        )
