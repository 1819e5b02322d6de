"""The conversation data model: messages, tool calls, usage and turn results.

All of these are immutable value objects with ``to_dict``/``from_dict`` so that
snapshots, events and stores share one JSON shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from sessionhive.model._plain import fields_dict
from sessionhive.model.content import ContentPart, part_from_dict, parts_text

__all__ = [
    "DEFAULT_MAX_CONTEXT",
    "AgentResult",
    "ContextUsage",
    "Message",
    "Role",
    "RunningTurn",
    "ToolCall",
    "ToolDefinition",
    "ToolResult",
    "Usage",
    "output_to_json",
]

DEFAULT_MAX_CONTEXT = 200_000
"""The context window assumed for a session whose config names none."""

Role = Literal["user", "assistant", "tool", "system"]
_ROLES: frozenset[str] = frozenset({"user", "assistant", "tool", "system"})


@dataclass(frozen=True)
class ToolCall:
    """A tool call requested by the LLM.

    ``arguments`` is the decoded JSON object; a provider (or a script) that
    sends arguments which are not a JSON object passes them as a string, and
    the agent loop turns that into a tool error the LLM can see. ``id`` is
    assigned by the provider, or by the agent loop when empty.
    """

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = ""

    def decoded_arguments(self) -> dict[str, Any]:
        """The arguments as a dict; raises ``ValueError`` when they are malformed."""
        if isinstance(self.arguments, dict):
            return self.arguments
        try:
            value = json.loads(self.arguments) if self.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"tool arguments are not valid JSON: {exc.msg} at {exc.pos}") from exc
        if not isinstance(value, dict):
            raise ValueError(f"tool arguments must be a JSON object, got {type(value).__name__}")
        return value

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        return cls(name=data["name"], arguments=data.get("arguments", {}), id=data.get("id", ""))


@dataclass(frozen=True)
class Message:
    """One message of a session's history.

    ``role`` is ``user``, ``assistant``, ``tool`` or ``system``; ``text`` is the
    plain text; an assistant message may carry ``tool_calls`` and a tool
    message names the call it answers in ``tool_call_id``. ``model`` names
    the model that wrote an assistant message when it is not the session's
    own (a fallback answered); ``None`` otherwise.

    ``in_progress`` marks a message of the turn still running, as
    ``history()`` shows it (the turn's prompt and its steps so far, so an
    approver sees what led to a confirmation). It is never stored: the
    session's own record holds unmarked messages, and it takes no part in
    comparing messages.

    ``parts`` holds the message's content parts (images, files, text) when
    it has any, and is empty for a plain text message; ``text`` is then the
    text of the parts, so that a caller reading text alone still can.
    """

    role: Role
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False
    model: str | None = None
    in_progress: bool = field(default=False, compare=False)
    parts: tuple[ContentPart, ...] = ()

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"message role must be one of {sorted(_ROLES)}, got {self.role!r}")
        if not isinstance(self.tool_calls, tuple):
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if not isinstance(self.parts, tuple):
            object.__setattr__(self, "parts", tuple(self.parts))

    @classmethod
    def user(cls, text: str, parts: tuple[ContentPart, ...] = ()) -> Message:
        """A user message; with ``parts``, its text is theirs (``text`` is then ignored)."""
        return cls("user", parts_text(parts) if parts else text, parts=parts)

    @classmethod
    def assistant(cls, text: str, tool_calls: tuple[ToolCall, ...] = (), model: str | None = None) -> Message:
        return cls("assistant", text, tool_calls, model=model)

    @classmethod
    def tool(
        cls, tool_call_id: str, text: str, *, is_error: bool = False, parts: tuple[ContentPart, ...] = ()
    ) -> Message:
        return cls("tool", text, (), tool_call_id, is_error, parts=parts)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "text": self.text}
        if self.tool_calls:
            data["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        if self.is_error:
            data["is_error"] = True
        if self.model is not None:
            data["model"] = self.model
        if self.in_progress:
            data["in_progress"] = True
        if self.parts:
            data["parts"] = [part.to_dict() for part in self.parts]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        return cls(
            role=data["role"],
            text=data.get("text", ""),
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls", ())),
            tool_call_id=data.get("tool_call_id"),
            is_error=bool(data.get("is_error", False)),
            model=data.get("model"),
            in_progress=bool(data.get("in_progress", False)),
            parts=tuple(part_from_dict(p) for p in data.get("parts") or ()),
        )


@dataclass(frozen=True)
class Usage:
    """Token counts, cost and model calls; adding two usages sums them.

    ``cached_tokens`` are the part of ``prompt_tokens`` the provider read
    from its prompt cache (priced lower). ``cost_usd`` is priced from
    :mod:`sessionhive.llm.prices` when the call is counted; ``model_calls``
    counts the calls.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model_calls: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
            self.model_calls + other.model_calls,
            self.cached_tokens + other.cached_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        return fields_dict(self, total_tokens=self.total_tokens)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(
            int(data.get("prompt_tokens", 0)),
            int(data.get("completion_tokens", 0)),
            float(data.get("cost_usd", 0.0)),
            int(data.get("model_calls", 0)),
            int(data.get("cached_tokens", 0)),
        )


@dataclass(frozen=True)
class ContextUsage:
    """How full the session's context window is.

    ``percent`` is a fraction in ``[0, 1]`` (as in the reference, where the
    auto-compact threshold 0.8 compares against it directly); it is derived
    from the two counts when not given.
    """

    used_tokens: int = 0
    max_tokens: int = DEFAULT_MAX_CONTEXT
    percent: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.percent < 0:
            percent = self.used_tokens / self.max_tokens if self.max_tokens else 0.0
            object.__setattr__(self, "percent", percent)

    def to_dict(self) -> dict[str, Any]:
        return {"used_tokens": self.used_tokens, "max_tokens": self.max_tokens, "percent": self.percent}


@dataclass(frozen=True)
class AgentResult:
    """What one turn produced.

    ``messages`` is the session's whole history after the turn, ``tool_calls``
    every tool call the turn made, ``rounds`` the number of LLM calls, and
    ``usage`` the tokens this turn spent.

    ``stop_reason`` says why the turn ended: ``"stop"`` (the model
    answered), ``"length"`` (the answer was cut off by the model's
    output-token limit: ``text`` may be incomplete), ``"refusal"``,
    ``"max_rounds"`` (``SessionConfig.max_tool_rounds`` reached),
    ``"cancelled"``, ``"error"``, ``"budget"`` (a :class:`~sessionhive.Budget`
    refused the next model call: nothing was sent, every tool call has its
    result), or another reason the provider gave.

    ``output`` is the validated answer of a turn run with an ``output_schema``:
    an instance of the pydantic model class given, or the JSON value for a
    JSON Schema (``None`` without a schema).
    """

    text: str
    messages: list[Message]
    usage: Usage
    tool_calls: list[ToolCall] = field(default_factory=list)
    rounds: int = 0
    stop_reason: str = "stop"
    output: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "messages": [m.to_dict() for m in self.messages],
            "usage": self.usage.to_dict(),
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "rounds": self.rounds,
            "stop_reason": self.stop_reason,
            "output": output_to_json(self.output),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentResult:
        """Rebuild from :meth:`to_dict`; without ``stop_reason`` (an older peer) it reads as ``"stop"``."""
        return cls(
            text=data["text"],
            messages=[Message.from_dict(m) for m in data.get("messages", [])],
            usage=Usage.from_dict(data.get("usage") or {}),
            tool_calls=[ToolCall.from_dict(c) for c in data.get("tool_calls", [])],
            rounds=int(data.get("rounds", 0)),
            stop_reason=str(data.get("stop_reason") or "stop"),
            output=data.get("output"),
        )


def output_to_json(value: Any) -> Any:
    """A structured output as plain JSON data: a pydantic instance dumped, anything else as it is."""
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) and not isinstance(value, type) else value


@dataclass(frozen=True)
class ToolDefinition:
    """A tool as the LLM sees it: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolResult:
    """The outcome of running one tool: its text output, whether it failed, and its images if any."""

    output: str
    is_error: bool = False
    parts: tuple[ContentPart, ...] = ()


@dataclass(frozen=True)
class RunningTurn:
    """A turn in flight, as the turn journal records it beside the session's messages.

    While a turn runs, each completed step (the prompt, each model answer,
    each tool result) is stored as appended messages together with this
    record; a turn that finishes clears it. Finding one when a session is
    restored means the process stopped mid-turn: the turn's messages are
    ``messages[first_message:]`` of the stored history (prompt first), and
    ``running_call`` names the tool call that had started to run (approved
    and handed to the tool) when the record was written, if any: its effects
    may have happened although no result is stored.
    """

    turn_id: int
    prompt: str
    started_at: float
    first_message: int
    running_call: str | None = None
    status: Literal["running"] = "running"
    #: The W3C ``traceparent`` of the turn's span, when traced: a resumed turn's span links to it.
    traceparent: str | None = None
    #: The JSON Schema of ``output_schema=``: a resumed turn still checks its answer against it.
    output_schema: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = fields_dict(self)
        for optional in ("traceparent", "output_schema"):  # most turns have neither: keep the record small
            if not data[optional]:
                del data[optional]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunningTurn:
        return cls(
            turn_id=int(data["turn_id"]),
            prompt=str(data["prompt"]),
            started_at=float(data.get("started_at", 0.0)),
            first_message=int(data["first_message"]),
            running_call=data.get("running_call"),
            traceparent=data.get("traceparent"),
            output_schema=data.get("output_schema"),
        )
