"""Budgets at the model call: price each answer, count it, and refuse a call a budget cannot afford.

:class:`BudgetLedger` counts what was spent against one :class:`~sessionhive.Budget`
(a session tree's, the Hive's, or a tenant's); :class:`BudgetBook` holds a
Hive's ledgers. A turn carries a :class:`Spending` (the ledgers that apply to
its session, and where to report cost) and the agent loop sends each model
call through :func:`call_within_budget`: before the call, every ledger
reserves the call and its estimated prompt, and if one cannot, the call is
not made and the turn stops with ``stop_reason="budget"``. After it, the
answer is priced (:mod:`sessionhive.llm.prices`, by the model that answered,
so a fallback is priced as itself) and the reservation turns into the real
spend. Reserving first means concurrent turns under one budget cannot all
pass the check on the same remaining amount.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sessionhive.agent.compaction import estimate_tokens
from sessionhive.llm.base import LlmRequest, LlmResponse
from sessionhive.llm.prices import current_prices
from sessionhive.model.budget import Budget
from sessionhive.model.messages import Usage

if TYPE_CHECKING:
    from sessionhive.metrics.registry import HiveMetrics

__all__ = ["BudgetBook", "BudgetLedger", "Spending", "call_within_budget", "session_spending"]


_NOTHING = Usage()


class BudgetLedger:
    """What was spent, and what calls in flight reserved, against one budget.

    ``scope`` is ``"session"``, ``"hive"`` or ``"tenant"`` (the label of
    ``sessionhive_budget_stops_total``).
    """

    def __init__(self, budget: Budget | None, scope: str, spent: Usage = _NOTHING) -> None:
        self.budget = budget
        self.scope = scope
        # Guards this ledger's counters only, no session state: turns of several sessions on
        # the turn loop charge one ledger while facades read it from their own threads.
        self._lock = threading.Lock()
        self._spent = spent
        self._reserved = Usage()

    @property
    def spent(self) -> Usage:
        with self._lock:
            return self._spent

    def reserve(self, estimate: Usage) -> str | None:
        """Hold ``estimate`` (one call) for a call about to start; or say which cap refuses it."""
        with self._lock:
            if self.budget is not None:
                total = self._spent + self._reserved + estimate
                refused = self.budget.refuses(total.total_tokens, total.cost_usd, total.model_calls)
                if refused is not None:
                    return refused
            self._reserved = self._reserved + estimate
            return None

    def settle(self, estimate: Usage, actual: Usage | None) -> None:
        """Release ``estimate`` and count ``actual`` (``None``: the call failed, its usage unknown)."""
        with self._lock:
            self._reserved = _minus(self._reserved, estimate)
            if actual is not None:
                self._spent = self._spent + actual


def _minus(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.prompt_tokens - b.prompt_tokens,
        a.completion_tokens - b.completion_tokens,
        a.cost_usd - b.cost_usd,
        a.model_calls - b.model_calls,
        a.cached_tokens - b.cached_tokens,
    )


class BudgetBook:
    """A Hive's ledgers: one per session that has a budget, and one per group under the Hive's budget.

    A group is the whole Hive, or a tenant when ``group_of`` (set by the
    service that knows tenants) maps a root session id to its tenant.
    """

    def __init__(self, hive_budget: Budget | None = None) -> None:
        self.hive_budget = hive_budget
        self.group_of: Callable[[str], str] | None = None
        # Guards the two ledger tables only (no session state): session actors on any
        # backend thread register ledgers while turns look them up.
        self._lock = threading.Lock()
        self._sessions: dict[str, BudgetLedger] = {}
        self._groups: dict[str, BudgetLedger] = {}

    def track(self, session_id: str, budget: Budget | None, spent: Usage) -> None:
        """Count against ``budget`` for ``session_id`` and its children; ``spent`` is what it stored.

        A ledger already kept (the session was passivated and came back) keeps
        its count, which includes its children's spend.
        """
        with self._lock:
            ledger = self._sessions.get(session_id)
            if budget is None:
                self._sessions.pop(session_id, None)
            elif ledger is None:
                self._sessions[session_id] = BudgetLedger(budget, "session", spent)
            else:
                ledger.budget = budget

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def ledgers(self, lineage: Sequence[str]) -> tuple[BudgetLedger, ...]:
        """The ledgers a call of the first session of ``lineage`` (then its parent, ..., root) counts in."""
        with self._lock:
            found = [self._sessions[sid] for sid in lineage if sid in self._sessions]
            if self.hive_budget is not None and lineage:
                group_of = self.group_of
                group = group_of(lineage[-1]) if group_of is not None else ""
                ledger = self._groups.get(group)
                if ledger is None:
                    ledger = self._groups[group] = BudgetLedger(
                        self.hive_budget, "tenant" if group_of is not None else "hive"
                    )
                found.append(ledger)
            return tuple(found)

    def group_spent(self, group: str = "") -> Usage:
        """What the Hive (``""``) or a tenant spent under the Hive's budget since it started."""
        with self._lock:
            ledger = self._groups.get(group)
        return ledger.spent if ledger is not None else Usage()


@dataclass(frozen=True)
class Spending:
    """What a turn needs to price its calls and keep to its budgets (see the module docstring).

    ``on_cost(model, usd)`` is told each priced answer and ``on_stop(scope)``
    each call a budget refused (the Hive counts them in its metrics).
    """

    ledgers: tuple[BudgetLedger, ...] = ()
    on_cost: Callable[[str, float], None] | None = None
    on_stop: Callable[[str], None] | None = None


def session_spending(
    book: BudgetBook, parents: Mapping[str, str], session_id: str, metrics: HiveMetrics
) -> Spending:
    """The :class:`Spending` of a turn of ``session_id``: its own budget, its ancestors', the Hive's."""
    lineage = [session_id]
    parent = parents.get(session_id)
    while parent is not None and parent not in lineage:
        lineage.append(parent)
        parent = parents.get(parent)

    def on_cost(model: str, usd: float) -> None:
        metrics.child(metrics.llm_cost, model).inc(usd)

    def on_stop(scope: str) -> None:
        metrics.child(metrics.budget_stops, scope).inc()

    return Spending(book.ledgers(lineage), on_cost, on_stop)


async def call_within_budget(
    spending: Spending | None, model: str, request: LlmRequest, call: Callable[[], Awaitable[LlmResponse]]
) -> LlmResponse | None:
    """``call()``'s answer with its usage priced (``cost_usd``, ``model_calls=1``); ``None`` if refused.

    ``model`` is the model asked (priced for the estimate); the answer is
    priced by the model that gave it. Nothing is sent when a ledger refuses.
    """
    prices = current_prices()
    ledgers = spending.ledgers if spending is not None else ()
    estimate = _NOTHING
    if ledgers:  # the estimate reads the whole history: only worth it when a budget applies
        prompt_only = Usage(prompt_tokens=estimate_tokens(request.messages, request.system), model_calls=1)
        estimate = replace(prompt_only, cost_usd=prices.cost(model, prompt_only))
    held: list[BudgetLedger] = []
    for ledger in ledgers:
        if ledger.reserve(estimate) is not None:
            for taken in held:
                taken.settle(estimate, None)
            if spending is not None and spending.on_stop is not None:
                spending.on_stop(ledger.scope)
            return None
        held.append(ledger)
    actual: Usage | None = None
    try:
        response = await call()
        answered_by = response.model or model
        cost = prices.cost(answered_by, response.usage)
        actual = replace(response.usage, cost_usd=cost, model_calls=1)
        if spending is not None and spending.on_cost is not None and cost:
            spending.on_cost(answered_by, cost)
        return replace(response, usage=actual)
    finally:
        for ledger in held:
            ledger.settle(estimate, actual)
