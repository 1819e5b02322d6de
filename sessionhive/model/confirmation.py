"""What an ``on_confirmation`` callback's answer means.

A callback answers a :class:`~sessionhive.ConfirmationRequired` with
``True``/``False``, ``(approved, reason)``, or an awaitable of either. Only
those shapes count: an answer is never truth-tested, so ``"no"``, ``None``,
``1`` or a coroutine nobody awaited cannot approve a call. Anything else
rejects the call, and the reason says what came back, so the turn's
``ConfirmationResolved`` event and the tool result the model sees explain it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from sessionhive.model.events import ConfirmationRequired
from sessionhive.model.validate import (
    check_confirm_arguments,  # re-exported: cluster/ and client/ import it here
)

__all__ = [
    "ConfirmationAnswer",
    "OnConfirmation",
    "check_confirm_arguments",
    "decision_from_answer",
    "read_confirmation_answer",
]

ConfirmationAnswer: TypeAlias = bool | tuple[bool, str | None]
"""What an ``on_confirmation`` callback returns: approved, or (approved, reason)."""

OnConfirmation: TypeAlias = Callable[
    [ConfirmationRequired], ConfirmationAnswer | Awaitable[ConfirmationAnswer]
]
"""An ``on_confirmation`` callback: a plain function or a coroutine function."""

# How much of an answer of the wrong shape the rejection reason quotes: enough
# to recognise it, not a whole object graph in an event.
_QUOTED_CHARS = 80


def decision_from_answer(answer: object) -> tuple[bool, str | None]:
    """``(approved, reason)`` from a settled (not awaitable) answer; a wrong shape rejects.

    >>> decision_from_answer((False, "not on Fridays"))
    (False, 'not on Fridays')
    >>> decision_from_answer("no")[0]
    False
    """
    if isinstance(answer, bool):
        return answer, None
    if (
        isinstance(answer, tuple)
        and len(answer) == 2
        and isinstance(answer[0], bool)
        and (answer[1] is None or isinstance(answer[1], str))
    ):
        return answer[0], answer[1]
    if inspect.isawaitable(answer):
        shown = f"an awaitable ({type(answer).__name__}) it did not await"
    else:
        text = repr(answer)
        shown = text if len(text) <= _QUOTED_CHARS else text[: _QUOTED_CHARS - 3] + "..."
    return False, (
        f"on_confirmation returned {shown}; only True, False or (bool, reason) approve or reject, "
        "so the call is rejected"
    )


async def read_confirmation_answer(answer: object, timeout_s: float) -> tuple[bool, str | None] | None:
    """``(approved, reason)`` from a callback's answer; an awaitable one is awaited for ``timeout_s`` at most.

    An awaitable that fails rejects the call with the error as the reason.
    One still pending after ``timeout_s`` (the confirmation's own timeout) is
    cancelled and gives ``None``: no answer, so the session settles the call
    as it settles any unanswered one, by ``ConfirmationPolicy.on_timeout``.
    """
    if inspect.isawaitable(answer):
        try:
            answer = await asyncio.wait_for(_awaited(answer), timeout_s)
        except TimeoutError:
            return None
        except Exception as error:  # noqa: BLE001 - a failing callback rejects; it never escapes
            return False, f"on_confirmation raised {type(error).__name__}: {error}"
    return decision_from_answer(answer)


async def _awaited(answer: Awaitable[object]) -> object:
    # wait_for takes coroutines and futures; this wraps any other awaitable too.
    return await answer
