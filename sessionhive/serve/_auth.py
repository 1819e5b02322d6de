"""Who is calling: bearer tokens, their tenants and scopes, read from a TOML token file.

The token file holds no secret, only each token's SHA-256 digest::

    [[token]]
    name = "alice"                       # who, as the audit log names them
    tenant = "acme"                      # whose sessions this token sees
    scopes = ["read", "write", "confirm"]
    sha256 = "9f86d081884c7d65..."       # hex digest of the token itself

    [tenant.acme]                        # optional quotas of a tenant
    max_sessions = 100
    max_concurrent_turns = 4

``sessionhive token new`` prints a fresh token and its table. A presented
token is hashed and compared with every digest by ``hmac.compare_digest``,
without stopping at the first match, so the time taken tells nothing about
which digest was close.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessionhive import InvalidConfig
from sessionhive.persistence.audit import DEFAULT_TENANT

__all__ = [
    "ALL_SCOPES",
    "Principal",
    "TenantQuota",
    "TokenTable",
    "new_token",
    "token_digest",
]

#: ``read``: histories, lists, events; ``write``: create, turns, configure, pause, resume,
#: cancel, delete; ``confirm``: approve or reject tool calls; ``admin``: every session of
#: every tenant, every scope, and the service-wide routes (flush, load-all).
ALL_SCOPES: tuple[str, ...] = ("read", "write", "confirm", "admin")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_TOKEN_KEYS = frozenset({"name", "tenant", "scopes", "sha256"})
_QUOTA_KEYS = ("max_sessions", "max_concurrent_turns")
#: Bytes of randomness in a token ``sessionhive token new`` makes (256 bits).
NEW_TOKEN_BYTES = 32


@dataclass(frozen=True)
class Principal:
    """The caller a token stands for: its ``name``, its ``tenant`` and what its ``scopes`` allow."""

    name: str
    tenant: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tenant": self.tenant, "scopes": sorted(self.scopes)}


@dataclass(frozen=True)
class TenantQuota:
    """A tenant's limits (``None``: unlimited)."""

    max_sessions: int | None = None
    max_concurrent_turns: int | None = None


UNLIMITED = TenantQuota()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    digest: bytes


class TokenTable:
    """The tokens a service accepts and the tenants' quotas."""

    def __init__(self, entries: list[_Entry], quotas: dict[str, TenantQuota]) -> None:
        if not entries:
            raise InvalidConfig("a token table needs at least one token")
        self._entries = tuple(entries)
        self._quotas = dict(quotas)

    @classmethod
    def single(cls, token: str) -> TokenTable:
        """``--token-file`` or ``SESSIONHIVE_TOKEN``: one token with every scope, tenant ``default``."""
        principal = Principal("token", DEFAULT_TENANT, frozenset(ALL_SCOPES))
        return cls([_Entry(principal, hashlib.sha256(token.encode()).digest())], {})

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidConfig(f"cannot read the tokens file {str(path)!r}: {exc.strerror}") from None
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, *, source: str = "<tokens>") -> TokenTable:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidConfig(f"the tokens file {source!r} is not valid TOML: {exc}") from None
        unknown = sorted(set(data) - {"token", "tenant"})
        if unknown:
            raise InvalidConfig(
                f"{source}: unknown top-level key(s) {unknown}; expected [[token]] and [tenant.NAME]"
            )
        tokens = data.get("token", [])
        if not isinstance(tokens, list) or not tokens:
            raise InvalidConfig(f"{source}: no [[token]] table; create one with `sessionhive token new`")
        entries = [_parse_token(item, f"{source}: token #{n}") for n, item in enumerate(tokens, 1)]
        for what, values in (
            ("name", [e.principal.name for e in entries]),
            ("sha256", [e.digest.hex() for e in entries]),
        ):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                shown = repeated if what == "name" else [f"{v[:8]}..." for v in repeated]
                raise InvalidConfig(f"{source}: two tokens have the same {what}: {shown}")
        tenants = data.get("tenant", {})
        if not isinstance(tenants, dict):
            raise InvalidConfig(f"{source}: write quotas as [tenant.NAME] tables")
        quotas = {name: _parse_quota(body, f"{source}: [tenant.{name}]") for name, body in tenants.items()}
        return cls(entries, quotas)

    @property
    def principals(self) -> list[Principal]:
        return [entry.principal for entry in self._entries]

    def authenticate(self, presented: str) -> Principal | None:
        """The principal whose digest matches ``presented``, or ``None``."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: Principal | None = None
        for entry in self._entries:  # no early exit: every digest is compared every time
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found

    def quota(self, tenant: str) -> TenantQuota:
        return self._quotas.get(tenant, UNLIMITED)


def _parse_token(item: Any, where: str) -> _Entry:
    if not isinstance(item, dict):
        raise InvalidConfig(f"{where}: must be a table")
    unknown = sorted(set(item) - _TOKEN_KEYS)
    missing = sorted(_TOKEN_KEYS - set(item))
    if unknown or missing:
        raise InvalidConfig(
            f"{where}: needs exactly name, tenant, scopes, sha256"
            + (f"; unknown {unknown}" if unknown else "")
            + (f"; missing {missing}" if missing else "")
        )
    name, tenant, scopes, digest = item["name"], item["tenant"], item["scopes"], item["sha256"]
    for label, value in (("name", name), ("tenant", tenant)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise InvalidConfig(
                f"{where}: {label} must be 1-128 letters, digits, '.', '_', '@' or '-', got {value!r}"
            )
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise InvalidConfig(f"{where} ({name}): scopes must be a non-empty list of {list(ALL_SCOPES)}")
    bad = sorted(set(scopes) - set(ALL_SCOPES))
    if bad:
        raise InvalidConfig(f"{where} ({name}): unknown scope(s) {bad}; known: {list(ALL_SCOPES)}")
    if not isinstance(digest, str) or not _HEX_DIGEST.match(digest.lower()):
        raise InvalidConfig(
            f"{where} ({name}): sha256 must be the 64-hex-digit SHA-256 of the token (never the token itself)"
        )
    return _Entry(Principal(name, tenant, frozenset(scopes)), bytes.fromhex(digest))


def _parse_quota(body: Any, where: str) -> TenantQuota:
    if not isinstance(body, dict):
        raise InvalidConfig(f"{where} must be a table")
    unknown = sorted(set(body) - set(_QUOTA_KEYS))
    if unknown:
        raise InvalidConfig(f"{where}: unknown key(s) {unknown}; known: {list(_QUOTA_KEYS)}")
    values: dict[str, int] = {}
    for key, value in body.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 31:
            raise InvalidConfig(f"{where}: {key} must be a positive integer, got {value!r}")
        values[key] = value
    return TenantQuota(values.get("max_sessions"), values.get("max_concurrent_turns"))


def new_token(name: str, tenant: str, scopes: list[str]) -> tuple[str, str]:
    """A fresh token and the ``[[token]]`` table that admits it (the table holds only its digest)."""
    # The same rules as a file's table, before any token is made.
    _parse_token({"name": name, "tenant": tenant, "scopes": scopes, "sha256": "0" * 64}, "the new token")
    token = "shv_" + secrets.token_urlsafe(NEW_TOKEN_BYTES)
    return token, "[[token]]\n" + _toml_fields(name, tenant, scopes, token_digest(token))


def _toml_fields(name: str, tenant: str, scopes: list[str], digest: str) -> str:
    # Plain quoting is enough: names, tenants and scopes were checked to need no escapes.
    listed = ", ".join(f'"{s}"' for s in scopes)
    return f'name = "{name}"\ntenant = "{tenant}"\nscopes = [{listed}]\nsha256 = "{digest}"\n'
