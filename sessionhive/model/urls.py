"""Provider endpoints as the operator allows them: ``base_url`` prefixes, and addresses refused by default.

A session's ``base_url`` is where its model calls go, keys and prompts
included. :class:`BaseUrlPolicy` decides which ones a Hive accepts: the
operator's own endpoints, each allowed prefix (scheme, host, port and path,
compared as parsed, never as text), and, when no allow-list is given, any
endpoint except the link-local and cloud-metadata addresses that hand out
credentials of the machine.

Host names are compared as written, not resolved: resolving at configure
time proves nothing about the address a later connection reaches (DNS may
answer differently then). The allow-list is what stops a name an attacker
controls; the refused addresses stop the literal ones, in every numeric
spelling ``inet_aton`` accepts (``2852039166``, ``0xa9.0xfe.0xa9.0xfe``...).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from sessionhive.model.errors import BaseUrlNotAllowed, InvalidConfig

__all__ = [
    "METADATA_ADDRESSES",
    "METADATA_HOSTS",
    "BaseUrlPolicy",
    "Endpoint",
    "shown_url",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}

#: Names of cloud metadata services (GCP, AWS, Azure, OpenStack), refused unless allowed explicitly.
METADATA_HOSTS: frozenset[str] = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)

#: Metadata services outside the link-local ranges: Alibaba Cloud, and AWS over IPv6.
METADATA_ADDRESSES: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset(
    {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}
)

# 169.254.169.254 (AWS, GCP, Azure, Oracle metadata) lies in the first; the
# second is IPv6 link-local. Neither is a place a model server should be.
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


def shown_url(url: object) -> str:
    """``url`` as it may appear in an error or a log: a user and password in it are masked."""
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text[:200]
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"[:200]


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` spells literally, in any form a resolver reads as one; else ``None``."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            # inet_aton reads what the C resolver reads: 2852039166, 0251.0376.0251.0376, 169.254.43518.
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Endpoint:
    """A parsed ``base_url``: scheme, host, port and path segments, in one canonical form.

    ``host`` is lower case without a trailing dot, or an IP address in its
    standard spelling; ``port`` is explicit (80 or 443 when the URL gives
    none). :meth:`covers` is the allow-list's prefix rule.
    """

    scheme: str
    host: str
    port: int
    path: tuple[str, ...]

    @classmethod
    def parse(cls, url: object) -> Endpoint:
        """The endpoint ``url`` names; :class:`~sessionhive.InvalidConfig` says what is wrong with it.

        Refused: anything but ``http``/``https``, a user or password, a query
        or fragment, backslashes, whitespace, non-ASCII text, and ``.``/``..``
        path segments (plain or percent-encoded), since clients that read such
        URLs differently would make a prefix mean two things.
        """
        if not isinstance(url, str) or not url:
            raise InvalidConfig(f"a base URL must be a non-empty string, got {type(url).__name__}")
        shown = shown_url(url)
        if not url.isascii() or any(ch <= " " or ch in "\x7f\\" for ch in url):
            raise InvalidConfig(
                f"base URL {shown!r} holds whitespace, a backslash or non-ASCII text "
                "(spell an international host name in punycode)"
            )
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise InvalidConfig(f"base URL {shown!r} must start with http:// or https://")
        if "@" in parts.netloc:
            raise InvalidConfig(
                f"base URL {shown!r} must not carry a user or password; give the key as LlmConfig.api_key"
            )
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            raise InvalidConfig(f"base URL {shown!r} must not have a query or fragment")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise InvalidConfig(f"base URL {shown!r} names no host")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            raise InvalidConfig(f"base URL {shown!r} has an invalid port") from None
        address = _address(host)
        if address is not None:
            host = str(address)
        segments = tuple(segment for segment in parts.path.split("/") if segment)
        for segment in segments:
            decoded = unquote(segment)
            if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
                raise InvalidConfig(f"base URL {shown!r} has a '.', '..' or encoded '/' path segment")
        return cls(scheme, host, port, segments)

    def covers(self, other: Endpoint) -> bool:
        """Whether ``other`` lies under this prefix: same scheme, host and port, and whole path segments."""
        return (
            self.scheme == other.scheme
            and self.host == other.host
            and self.port == other.port
            and other.path[: len(self.path)] == self.path
        )

    def refusal(self) -> str | None:
        """Why this endpoint is refused unless allowed explicitly (link-local, metadata), or ``None``."""
        if self.host in METADATA_HOSTS:
            return f"{self.host} is a cloud metadata service"
        address = _address(self.host.strip("[]"))
        if address is None:
            return None
        if address in METADATA_ADDRESSES:
            return f"{address} is a cloud metadata service"
        if any(address in network for network in _LINK_LOCAL):
            return f"{address} is a link-local address (where cloud metadata services answer)"
        return None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        path = "".join("/" + segment for segment in self.path)
        return f"{self.scheme}://{host}:{self.port}{path}"


class BaseUrlPolicy:
    """Which ``base_url`` a Hive's sessions may name.

    ``allowed`` is the operator's allow-list (each an :class:`Endpoint`
    prefix) or ``None`` for no list: then any endpoint is accepted except
    link-local and metadata addresses. ``operator`` are the base URLs the
    operator configured elsewhere (the Hive's own ``llm``): accepted as
    prefixes too, and verbatim even when they do not parse.

    Example::

        policy = BaseUrlPolicy(["http://vllm.internal:8000/v1"])
        policy.check("http://vllm.internal:8000/v1")     # accepted
        policy.check("http://attacker.example/v1")        # raises BaseUrlNotAllowed
    """

    def __init__(self, allowed: Iterable[str] | None = None, operator: Iterable[str] = ()) -> None:
        if isinstance(allowed, str):
            raise InvalidConfig("allow_base_urls must be a list of URLs, not one string")
        self.open = allowed is None
        self.allowed: tuple[Endpoint, ...] = tuple(Endpoint.parse(url) for url in allowed or ())
        self._operator_urls = frozenset(operator)
        operator_endpoints = []
        for url in self._operator_urls:
            try:
                operator_endpoints.append(Endpoint.parse(url))
            except InvalidConfig:
                pass  # still accepted verbatim: the operator chose it
        self.operator: tuple[Endpoint, ...] = tuple(operator_endpoints)

    def __repr__(self) -> str:
        listed = "None" if self.open else [str(e) for e in self.allowed]
        return f"BaseUrlPolicy(allowed={listed}, operator={[str(e) for e in self.operator]})"

    def allows_explicitly(self, base_url: str) -> bool:
        """Whether the operator named ``base_url`` (in the allow-list, or as the Hive's own endpoint)."""
        if base_url in self._operator_urls:
            return True
        try:
            endpoint = Endpoint.parse(base_url)
        except InvalidConfig:
            return False
        return any(prefix.covers(endpoint) for prefix in (*self.allowed, *self.operator))

    def check(self, base_url: str | None) -> None:
        """Accept ``base_url`` (``None``: the provider's default), or raise :class:`BaseUrlNotAllowed`."""
        if base_url is None or base_url in self._operator_urls:
            return
        try:
            endpoint = Endpoint.parse(base_url)
        except InvalidConfig as exc:
            shown = shown_url(base_url)
            raise BaseUrlNotAllowed(shown, str(exc).removeprefix(f"base URL {shown!r} ")) from None
        if any(prefix.covers(endpoint) for prefix in (*self.allowed, *self.operator)):
            return
        refusal = endpoint.refusal()
        if refusal is not None:
            raise BaseUrlNotAllowed(base_url, refusal)
        if not self.open:
            raise BaseUrlNotAllowed(base_url, "it is not among the endpoints the operator allowed")
