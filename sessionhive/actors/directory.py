"""What the actors publish for the facade to read without sending a message.

The :class:`Directory` is the supervisor's: it alone writes it (on its own
thread or loop), and the facade reads it from any thread to route a call
straight to a live session's mailbox (Orleans' directory cache is the model).
A :class:`SessionEntry`'s ``view`` is its session actor's: the actor alone
replaces it, with a new immutable :class:`SessionView`, after every change
and before it answers the call that made the change (read-your-writes).

Readers only ever do single dictionary lookups, ``len`` and ``in`` on these
containers, and read immutable values, which CPython makes atomic; nothing
here is iterated outside its owner, so no lock is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from sessionhive.model.config import ConfirmationPolicy
from sessionhive.model.llm_config import LlmConfig
from sessionhive.model.messages import ContextUsage, Message, Usage

if TYPE_CHECKING:
    import pykka

__all__ = ["Directory", "SessionEntry", "SessionView"]


class SessionView(NamedTuple):
    """An immutable picture of one session, as of its last change.

    A named tuple: the view is rebuilt after every change, and a tuple is
    the cheapest immutable object Python builds.
    """

    version: int
    state: Literal["active", "paused"]
    history: tuple[Message, ...]
    usage: Usage
    context_usage: ContextUsage
    pending_confirmations: tuple[str, ...]
    policy: ConfirmationPolicy
    llm_config: LlmConfig | None  # never with an API key
    parent_id: str | None
    #: The running turn's messages so far, marked in progress: ``history()`` shows them after
    #: ``history`` (kept apart so that publishing a step copies no history).
    in_progress: tuple[Message, ...] = ()


class SessionEntry:
    """A live session: its actor's ref (supervisor-written) and its view (session-written)."""

    __slots__ = ("ref", "session_id", "view")

    def __init__(self, session_id: str, ref: pykka.ActorRef[Any] | None = None) -> None:
        self.session_id = session_id
        self.ref = ref
        self.view: SessionView | None = None  # set by the session actor before it takes a call


class Directory:
    """The supervisor's published registry (see the module docstring)."""

    __slots__ = ("children", "failed", "known", "live", "parents")

    def __init__(self) -> None:
        self.live: dict[str, SessionEntry] = {}
        self.known: set[str] = set()  # live or resting in the store
        self.parents: dict[str, str] = {}
        self.children: dict[str, frozenset[str]] = {}  # replaced, never mutated: readers may iterate
        self.failed: dict[str, str] = {}  # session id -> the last crash, past the restart intensity
