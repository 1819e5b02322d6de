"""What a load test does: :class:`LoadtestOptions`, validated once, and the duration syntax it accepts."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sessionhive import InvalidConfig, LlmClient, LlmConfig, RateLimit
from sessionhive.hive import DEFAULT_ACTOR_BACKEND
from sessionhive.model.validate import check_int, check_number, check_positive_number

__all__ = ["ACTOR_BACKENDS", "LoadtestOptions", "parse_duration"]

#: The actor backends a load test may ask the Hive for.
ACTOR_BACKENDS: tuple[str, ...] = ("asyncio", "pooled", "threads")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|m|min|h)?\s*$")
_UNIT_SECONDS = {
    None: 1.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str | float) -> float:
    """Seconds from ``"1h"``, ``"30m"``, ``"45s"``, ``"500ms"``, ``"250us"`` or ``"0.05"`` (bare: seconds).

    Raises :class:`~sessionhive.InvalidConfig` for anything else, negative values included.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        return check_number("a duration", text, unit="seconds")
    match = _DURATION.match(str(text))
    if match is None:
        raise InvalidConfig(f"cannot read duration {text!r}; write e.g. 1h, 30m, 45s, 500ms or 0.05")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class LoadtestOptions:
    """What :func:`~sessionhive.loadtest.run_loadtest` does; every field has the CLI option of the same name.

    - ``sessions``: top-level sessions; each gets ``children_per_session``
      child sessions, and every one of them (children too) runs ``turns`` turns.
    - ``tools_per_turn``: tool calls per turn (scripted model only).
    - ``llm_latency``: seconds the scripted model waits before each answer.
    - ``concurrency``: most turns in flight at once (``None``: all sessions).
    - ``store``: where sessions live (``None``: a fresh temporary SQLite file,
      deleted afterwards unless ``keep_store``).
    - ``confirm_rate``: the fraction of tool calls that need a confirmation.
    - ``actor_backend``: ``"asyncio"``, ``"pooled"`` or ``"threads"`` (``None``: the Hive's default).
    - ``llm``: a real provider instead of the scripted model.
    - ``metrics_port``: serve ``/metrics`` there while the test runs (0: a free port).
    - ``metrics_addr``: the address ``/metrics`` listens on.
    - ``probe_interval``: seconds between two rounds of control-call probes.
    - ``stream``: run turns with ``generate_streaming`` and read every event
      (the default, as a user interface does); ``False`` uses ``generate``,
      which emits no text deltas (no confirmations then: they arrive as events).
    - ``rpm`` / ``tpm``: the provider account's requests and tokens per
      minute: the model's limiter keeps to them (``LlmConfig.rate_limit``;
      a real provider only, the scripted model has no account).
    - ``hive_options``: more keyword arguments for ``Hive.start``
      (``idle_timeout``, ``max_live_sessions``, ``batch_size``...).
    """

    sessions: int = 100
    turns: int = 3
    tools_per_turn: int = 2
    llm_latency: float = 0.0
    concurrency: int | None = None
    store: str | None = None
    children_per_session: int = 0
    confirm_rate: float = 0.0
    actor_backend: str | None = None
    llm: LlmConfig | LlmClient | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    workspace: str | None = None
    probe_interval: float = 0.005
    stream: bool = True
    verify: bool = True
    keep_store: bool = False
    hive_options: Mapping[str, Any] = field(default_factory=dict)
    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        if self.rpm is not None or self.tpm is not None:
            if not isinstance(self.llm, LlmConfig):
                raise InvalidConfig(
                    "rpm/tpm set a provider account's limits: they need a provider model "
                    "(--provider openai|anthropic --model ...), not the scripted one"
                )
            limit = RateLimit(requests_per_minute=self.rpm, tokens_per_minute=self.tpm)
            object.__setattr__(self, "llm", replace(self.llm, rate_limit=limit))
        check_int("sessions", self.sessions, minimum=1)
        check_int("turns", self.turns, minimum=1)
        check_int("tools_per_turn", self.tools_per_turn)
        check_int("children_per_session", self.children_per_session)
        if self.concurrency is not None:
            check_int("concurrency", self.concurrency, minimum=1)
        check_number("confirm_rate", self.confirm_rate, maximum=1.0)
        if self.confirm_rate > 0 and not self.stream:
            raise InvalidConfig("confirmations are seen on the turn's stream; confirm_rate needs stream=True")
        if self.confirm_rate > 0 and self.tools_per_turn == 0:
            raise InvalidConfig("confirm_rate needs tool calls to confirm; set tools_per_turn >= 1")
        object.__setattr__(self, "llm_latency", parse_duration(self.llm_latency))
        check_positive_number("probe_interval", self.probe_interval, unit="seconds")
        if self.actor_backend not in (None, *ACTOR_BACKENDS):
            raise InvalidConfig(
                f"actor_backend must be 'asyncio', 'pooled' or 'threads', got {self.actor_backend!r}"
            )

    @property
    def backend_name(self) -> str:
        """The backend the Hive runs: this option, else the Hive's default (the environment may set it)."""
        return self.actor_backend or os.environ.get("SESSIONHIVE_ACTOR_BACKEND") or DEFAULT_ACTOR_BACKEND

    @property
    def total_sessions(self) -> int:
        return self.sessions * (1 + self.children_per_session)

    @property
    def scripted(self) -> bool:
        return self.llm is None

    def to_dict(self) -> dict[str, Any]:
        """The options as plain JSON values (an LLM config by its repr, which hides the key)."""
        data = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("llm", "hive_options")
        }
        data["llm"] = "scripted" if self.llm is None else repr(self.llm)
        data["hive_options"] = {
            k: repr(v) if not isinstance(v, int | float | str | bool | None) else v
            for k, v in self.hive_options.items()
        }
        data["total_sessions"] = self.total_sessions
        data["actor_backend"] = self.backend_name
        return data
