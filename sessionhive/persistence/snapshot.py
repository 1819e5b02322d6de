"""``SessionSnapshot``: the immutable, JSON-shaped state of one session at one version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import DEFAULT_MAX_CONTEXT, ContextUsage, Message, RunningTurn, Usage
from sessionhive.model.runs import Run

__all__ = ["SCHEMA_VERSION", "SessionSnapshot"]

#: 1: the first layout; 2: ``running_turn`` (the turn journal's in-flight turn);
#: 3: ``runs`` (a table of their own in SQL) and ``event_seq``;
#: 4: content parts in messages, their large bytes as blobs (``sessionhive_blobs`` in SQL).
SCHEMA_VERSION = 4


@dataclass(frozen=True)
class SessionSnapshot:
    """Everything needed to bring a session back, never the API key.

    ``version`` grows by one with every change of the session; a store never
    lets an older version overwrite a newer one. ``history_epoch`` grows when
    the history is rewritten (clear, compact); while it stays the same,
    ``messages`` only ever grows, so a store may append just the messages it
    does not hold yet.

    ``running_turn`` is set while a turn is in flight (the turn journal: its
    completed steps are already in ``messages``) and ``None`` otherwise.

    ``runs`` are the session's runs: those not finished, then its last
    finished ones (at most the Hive's ``max_finished_runs``), oldest first.
    ``event_seq`` is the id of the last event the session emitted: event ids
    keep growing across restarts.
    """

    session_id: str
    version: int
    parent_id: str | None
    state: Literal["active", "paused"]
    config: SessionConfig
    confirmation_policy: ConfirmationPolicy
    llm_config: LlmConfig | None
    thinking: bool
    budget: int | None
    usage: Usage
    context_usage: ContextUsage
    messages: tuple[Message, ...]
    history_epoch: int
    created_at: float
    updated_at: float
    running_turn: RunningTurn | None = None
    runs: tuple[Run, ...] = ()
    event_seq: int = 0

    def __post_init__(self) -> None:
        if self.llm_config is not None and self.llm_config.api_key is not None:
            object.__setattr__(self, "llm_config", self.llm_config.without_key())

    def header_dict(self) -> dict[str, Any]:
        """Everything but the messages, as JSON."""
        return {
            "session_id": self.session_id,
            "version": self.version,
            "parent_id": self.parent_id,
            "state": self.state,
            "config": self.config.to_dict(),
            "confirmation_policy": self.confirmation_policy.to_dict(),
            "llm_config": self.llm_config.to_dict() if self.llm_config else None,
            "thinking": self.thinking,
            "budget": self.budget,
            "usage": self.usage.to_dict(),
            "context_usage": {
                "used_tokens": self.context_usage.used_tokens,
                "max_tokens": self.context_usage.max_tokens,
            },
            "history_epoch": self.history_epoch,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "running_turn": self.running_turn.to_dict() if self.running_turn else None,
            "runs": [run.to_dict() for run in self.runs],
            "event_seq": self.event_seq,
        }

    def to_dict(self) -> dict[str, Any]:
        data = self.header_dict()
        data["messages"] = [m.to_dict() for m in self.messages]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], messages: tuple[Message, ...] | None = None) -> SessionSnapshot:
        """Rebuild from :meth:`to_dict` (or :meth:`header_dict` plus ``messages``)."""
        if messages is None:
            messages = tuple(Message.from_dict(m) for m in data.get("messages", ()))
        context = data.get("context_usage") or {}
        llm = data.get("llm_config")
        running = data.get("running_turn")
        return cls(
            session_id=data["session_id"],
            version=int(data["version"]),
            parent_id=data.get("parent_id"),
            state=data.get("state", "active"),
            config=SessionConfig.from_dict(data.get("config") or {}),
            confirmation_policy=ConfirmationPolicy.from_dict(data.get("confirmation_policy") or {}),
            llm_config=LlmConfig.from_dict(llm) if llm else None,
            thinking=bool(data.get("thinking", False)),
            budget=data.get("budget"),
            usage=Usage.from_dict(data.get("usage") or {}),
            context_usage=ContextUsage(
                int(context.get("used_tokens", 0)), int(context.get("max_tokens", DEFAULT_MAX_CONTEXT))
            ),
            messages=messages,
            history_epoch=int(data.get("history_epoch", 0)),
            created_at=float(data.get("created_at", 0.0)),
            updated_at=float(data.get("updated_at", 0.0)),
            running_turn=RunningTurn.from_dict(running) if running else None,
            runs=tuple(Run.from_dict(run) for run in data.get("runs") or ()),
            event_seq=int(data.get("event_seq") or 0),
        )
