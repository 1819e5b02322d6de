"""sessionhive: thousands of concurrent LLM-agent sessions in one process, as actors.

Start a :class:`Hive` (or an :class:`AsyncHive`), create sessions, and run
turns; every session is an actor that alone owns its state, snapshots are
written in batches through SQLAlchemy, and Prometheus metrics tell how it
goes. See the README for a tour and DESIGN.md for the architecture.
"""

from __future__ import annotations

from sessionhive._gc import tune_gc
from sessionhive.actors.webhooks import verify_webhook_signature
from sessionhive.aio import AsyncHive, AsyncSubscription, AsyncTurnStream
from sessionhive.api import (
    AsyncHiveAPI,
    AsyncRunsAPI,
    AsyncSubscriptionAPI,
    AsyncTurnStreamAPI,
    HiveAPI,
    RunsAPI,
    SubscriptionAPI,
    TurnStreamAPI,
)
from sessionhive.hive import Hive, Subscription, TurnStream
from sessionhive.llm import LlmClient, LlmConfig, RateLimit, Reply, ScriptedLlm
from sessionhive.llm.prices import Price, PriceTable, set_prices
from sessionhive.metrics.registry import MetricsConfig
from sessionhive.model.budget import Budget
from sessionhive.model.config import ConfirmationPolicy, SessionConfig
from sessionhive.model.content import ContentPart, FilePart, ImagePart, Prompt, TextPart
from sessionhive.model.errors import (
    BaseUrlNotAllowed,
    CallTimeout,
    ConfirmationNotFound,
    Forbidden,
    HiveStopped,
    InvalidConfig,
    InvalidSessionId,
    LlmError,
    LlmNotConfigured,
    OutcomeUnknown,
    OutputInvalid,
    Overloaded,
    QuotaExceeded,
    SessionExists,
    SessionFailed,
    SessionhiveError,
    SessionNotFound,
    StoreError,
    TurnFailed,
)
from sessionhive.model.events import (
    AgentEvent,
    ConfirmationRequired,
    ConfirmationResolved,
    ContextCompacted,
    EventsDropped,
    PersistenceFailed,
    SessionPaused,
    SessionResumed,
    TextDelta,
    ToolEnd,
    ToolStart,
    TurnCancelled,
    TurnEnd,
    TurnError,
    TurnInterrupted,
    TurnStart,
    event_to_dict,
)
from sessionhive.model.mcp import McpServer
from sessionhive.model.messages import (
    AgentResult,
    ContextUsage,
    Message,
    ToolCall,
    ToolDefinition,
    ToolResult,
    Usage,
)
from sessionhive.model.output import OutputSchema
from sessionhive.model.runs import (
    IdempotencyConflict,
    OnBusy,
    Run,
    RunNotFound,
    RunStatus,
    SessionBusy,
    Webhook,
)
from sessionhive.runtime import AsyncioBackend, PooledBackend, ThreadBackend
from sessionhive.tools import PermissionPolicy, PermissionRule, ToolContext, ToolExecutor

__version__ = "0.1.0"

__all__ = [
    "AgentEvent",
    "AgentResult",
    "AsyncHive",
    "AsyncHiveAPI",
    "AsyncRunsAPI",
    "AsyncSubscription",
    "AsyncSubscriptionAPI",
    "AsyncTurnStream",
    "AsyncTurnStreamAPI",
    "AsyncioBackend",
    "BaseUrlNotAllowed",
    "Budget",
    "CallTimeout",
    "ConfirmationNotFound",
    "ConfirmationPolicy",
    "ConfirmationRequired",
    "ConfirmationResolved",
    "ContentPart",
    "ContextCompacted",
    "ContextUsage",
    "EventsDropped",
    "FilePart",
    "Forbidden",
    "Hive",
    "HiveAPI",
    "HiveStopped",
    "IdempotencyConflict",
    "ImagePart",
    "InvalidConfig",
    "InvalidSessionId",
    "LlmClient",
    "LlmConfig",
    "LlmError",
    "LlmNotConfigured",
    "McpServer",
    "Message",
    "MetricsConfig",
    "OnBusy",
    "OutcomeUnknown",
    "OutputInvalid",
    "OutputSchema",
    "Overloaded",
    "PermissionPolicy",
    "PermissionRule",
    "PersistenceFailed",
    "PooledBackend",
    "Price",
    "PriceTable",
    "Prompt",
    "QuotaExceeded",
    "RateLimit",
    "Reply",
    "Run",
    "RunNotFound",
    "RunStatus",
    "RunsAPI",
    "ScriptedLlm",
    "SessionBusy",
    "SessionConfig",
    "SessionExists",
    "SessionFailed",
    "SessionNotFound",
    "SessionPaused",
    "SessionResumed",
    "SessionhiveError",
    "StoreError",
    "Subscription",
    "SubscriptionAPI",
    "TextDelta",
    "TextPart",
    "ThreadBackend",
    "ToolCall",
    "ToolContext",
    "ToolDefinition",
    "ToolEnd",
    "ToolExecutor",
    "ToolResult",
    "ToolStart",
    "TurnCancelled",
    "TurnEnd",
    "TurnError",
    "TurnFailed",
    "TurnInterrupted",
    "TurnStart",
    "TurnStream",
    "TurnStreamAPI",
    "Usage",
    "Webhook",
    "__version__",
    "event_to_dict",
    "set_prices",
    "tune_gc",
    "verify_webhook_signature",
]
