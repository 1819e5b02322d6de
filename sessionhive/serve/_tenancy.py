"""Whose session is it, may this token do that, and is its tenant within quota.

- Each route needs the one scope its declaration names (``scope=`` is a
  required argument of ``@router.get(...)``, so no route is added without a decision).
- A session belongs to the tenant whose token created it (a child to its
  parent's tenant). Another tenant's session answers 404 exactly as a session
  that does not exist: a 403 would confirm that it exists.
- Quotas (``max_sessions``, ``max_concurrent_turns``) are counted here, in
  the service's event loop, and refused with :class:`~sessionhive.QuotaExceeded`
  (429) before anything is done.
- Every action is written to the audit log, off the event loop.
- The Hive's budget (``Hive.start(budget=...)``) is counted per tenant: each
  tenant's sessions spend from a budget of their own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from sessionhive import Forbidden, QuotaExceeded, SessionNotFound
from sessionhive.agent.spending import BudgetBook
from sessionhive.persistence.audit import DEFAULT_TENANT, AuditLog, AuditRecord

from ._auth import UNLIMITED, Principal, TenantQuota, TokenTable

__all__ = ["Tenancy"]

_WHAT = {"read": "reading sessions", "write": "changing sessions", "confirm": "deciding tool calls"}


class Tenancy:
    """Ownership, scopes, quotas and the audit trail of one service.

    Owned by the service's event loop: the counters are touched only there;
    the database is reached through ``asyncio.to_thread``.
    """

    def __init__(self, tokens: TokenTable | None, audit: AuditLog) -> None:
        self.tokens = tokens
        self.audit = audit
        self._owners: dict[str, str] = audit.owners()
        self._sessions_of: Counter[str] = Counter(self._owners.values())
        self._creating: Counter[str] = Counter()
        self._turns_of: Counter[str] = Counter()
        #: A session's parent (the Hive's directory; read-only, one dict lookup a call).
        self.parent_of: Callable[[str], str | None] = _no_parent

    def budget_per_tenant(self, book: BudgetBook) -> None:
        """Count the Hive's budget in ``book`` per tenant, by the owner of each root session."""
        book.group_of = self.owner  # one dict lookup, safe from the turn loop's thread

    # ------------------------------------------------------------------ scopes

    @staticmethod
    def require(principal: Principal, scope: str, route: str) -> None:
        """Refuse ``principal`` unless it holds ``scope`` (``""``: any valid token)."""
        if scope and not principal.allows(scope):
            raise Forbidden(scope, _WHAT.get(scope, f"the {route} route"))

    # ------------------------------------------------------------------ ownership

    def owner(self, session_id: str) -> str:
        """The tenant of ``session_id`` (:data:`DEFAULT_TENANT` for a session nobody claimed).

        Read from memory: the owners table is loaded once at start and this service is its
        only writer (one service per store, as ``sessionhive serve`` runs), so no request
        waits on the database to learn whose session it names.
        """
        owner = self._owners.get(session_id)
        return owner if owner is not None else self._inherited_owner(session_id)

    def _inherited_owner(self, session_id: str) -> str:
        """An unclaimed child (a task tool's, made inside its parent's turn) has its parent's tenant."""
        parent, seen = self.parent_of(session_id), {session_id}
        while parent is not None and parent not in seen:
            owner = self._owners.get(parent)
            if owner is not None:
                return owner
            seen.add(parent)
            parent = self.parent_of(parent)
        return DEFAULT_TENANT

    def claimed_by(self, session_id: str) -> str | None:
        """The tenant that claimed ``session_id`` through this service, if any."""
        return self._owners.get(session_id)

    def check(self, principal: Principal, session_id: str) -> str:
        """The session's tenant, or :class:`SessionNotFound` when ``principal`` may not see it."""
        tenant = self.owner(session_id)
        if not principal.is_admin and tenant != principal.tenant:
            raise SessionNotFound(session_id)
        return tenant

    def visible(self, principal: Principal, session_ids: Iterable[str]) -> list[str]:
        if principal.is_admin:
            return list(session_ids)
        return [s for s in session_ids if self.owner(s) == principal.tenant]

    def reserve_session(self, tenant: str) -> None:
        """Hold a place for a new session of ``tenant``, or refuse it at ``max_sessions``.

        Pair with :meth:`unreserve_session` once the create is done, however it ended: the
        place keeps two concurrent creates from both passing the last free slot.
        """
        limit = self.quota(tenant).max_sessions
        if limit is not None and self._sessions_of[tenant] + self._creating[tenant] >= limit:
            raise QuotaExceeded(tenant, "max_sessions", limit)
        self._creating[tenant] += 1

    def unreserve_session(self, tenant: str) -> None:
        self._creating[tenant] -= 1
        if self._creating[tenant] <= 0:
            del self._creating[tenant]

    def quota(self, tenant: str) -> TenantQuota:
        return self.tokens.quota(tenant) if self.tokens is not None else UNLIMITED

    async def claim(self, session_ids: list[str], tenant: str) -> None:
        for sid in session_ids:
            self._remember(sid, tenant)
        await asyncio.to_thread(self.audit.claim, session_ids, tenant)

    async def release(self, session_ids: list[str]) -> None:
        for sid in session_ids:
            previous = self._owners.pop(sid, None)
            if previous is not None:
                self._sessions_of[previous] -= 1
        await asyncio.to_thread(self.audit.release, session_ids)

    def _remember(self, session_id: str, tenant: str) -> None:
        previous = self._owners.get(session_id)
        if previous is not None:
            self._sessions_of[previous] -= 1
        self._owners[session_id] = tenant
        self._sessions_of[tenant] += 1

    # ------------------------------------------------------------------ turns

    def turn_started(self, tenant: str) -> None:
        """Count a turn of ``tenant``, or refuse it at ``max_concurrent_turns``."""
        limit = self.quota(tenant).max_concurrent_turns
        if limit is not None and self._turns_of[tenant] >= limit:
            raise QuotaExceeded(tenant, "max_concurrent_turns", limit)
        self._turns_of[tenant] += 1

    def turn_ended(self, tenant: str) -> None:
        self._turns_of[tenant] -= 1
        if self._turns_of[tenant] <= 0:
            del self._turns_of[tenant]

    def turns_running(self, tenant: str) -> int:
        return self._turns_of[tenant]

    # ------------------------------------------------------------------ audit

    async def record(
        self,
        principal: Principal,
        action: str,
        session_id: str | None,
        session_tenant: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        entry = AuditRecord(
            time=time.time(),
            token_name=principal.name,
            tenant=principal.tenant,
            action=action,
            session_id=session_id,
            session_tenant=session_tenant,
            detail=detail or {},
        )
        await asyncio.to_thread(self.audit.record, entry)

    async def records(
        self, principal: Principal, session_id: str | None, limit: int, offset: int
    ) -> tuple[int, list[AuditRecord]]:
        """An admin reads every record; anyone else those of their tenant's sessions."""
        # Filtering by the owning tenant is the whole check: another tenant's session (or one
        # that never existed) reads as a session without records, which tells nothing.
        tenant = None if principal.is_admin else principal.tenant
        return await asyncio.to_thread(
            self.audit.records, session_id=session_id, session_tenant=tenant, limit=limit, offset=offset
        )


def _no_parent(_session_id: str) -> str | None:
    return None
