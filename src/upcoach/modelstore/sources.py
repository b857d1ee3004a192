"""Where a model download may connect: public internet addresses only, unless ``UPCOACH_MODEL_SOURCE_ALLOW`` names
the address or host.

An admin-given URL (or any redirect it leads to) could otherwise reach loopback services, the cloud metadata
endpoint (169.254.169.254, fd00:ec2::254) or the private network behind the server (SSRF). The check runs where the
connection is made, in the HTTP client's network backend: for every connection, so for every redirect hop and every
resumed range request, the host is resolved once, *every* address it resolves to is checked, and the socket connects
to the checked address itself. There is no second lookup, so no DNS-rebinding window. TLS still verifies the
certificate against the host name.

Refused: loopback, link-local (cloud metadata), private (RFC 1918, fc00::/7), shared (100.64.0.0/10), unspecified,
multicast, reserved and documentation ranges, anything not globally routable, and IPv6 forms that embed such an
IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, Teredo, NAT64 ``64:ff9b::/96``).

``UPCOACH_MODEL_SOURCE_ALLOW``: comma-separated entries, each an IP address (``127.0.0.1``), a network in CIDR
form (``10.20.0.0/16``, ``fd00::/8``) or a host name (``models.internal``, exact, case-insensitive; every address
that name resolves to is then accepted). Environment proxies are not used for downloads: a proxy would resolve
the name itself, out of reach of this check.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx

from upcoach.errors import SourceNotAllowed

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# Why an address is not a public source, checked in this order (the first match names the refusal).
REFUSED: tuple[tuple[str, Callable[[Address], bool]], ...] = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local (cloud metadata)", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("reserved", lambda a: a.is_reserved),
    ("private", lambda a: a.is_private),
    ("not globally routable", lambda a: not a.is_global),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo client, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: Address) -> str | None:
    """Why ``address`` may not be a model source, or None for a public address."""
    inner = _embedded(address)
    if inner is not None and (reason := refusal(inner)) is not None:
        return f"{reason} (IPv6 form of IPv4)"
    for reason, applies in REFUSED:
        if applies(address):
            return reason
    return None


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class SourcePolicy:
    """Which addresses downloads may connect to. ``allow`` entries: IPs, CIDR networks or host names."""

    def __init__(self, allow: Iterable[str] = (), *, resolver: Resolver = _system_resolver) -> None:
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._hosts: set[str] = set()
        for entry in (item.strip() for item in allow):
            if not entry:
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry.lower().rstrip("."))
        self.resolver = resolver

    def address_for(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: resolved once, every answer checked (SourceNotAllowed)."""
        try:
            answers = self.resolver(host, port)
        except OSError as exc:
            raise SourceNotAllowed("the model source's host name could not be resolved") from exc
        if not answers:
            raise SourceNotAllowed("the model source's host name has no address")
        if host.lower().rstrip(".") in self._hosts:
            return answers[0]
        for answer in answers:
            address = ipaddress.ip_address(answer.split("%", 1)[0])
            reason = refusal(address)
            if reason is not None and not any(address in network for network in self._networks):
                log.warning("model download to %s refused: it resolves to %s (%s)", host, answer, reason)
                raise SourceNotAllowed(
                    f"the model source (or a redirect) leads to a {reason} address, which downloads may not reach; "
                    "an operator can allow it with UPCOACH_MODEL_SOURCE_ALLOW"
                )
        return answers[0]


class _CheckedBackend(httpcore.SyncBackend):
    """Connects only to addresses the policy accepts, and to exactly the address it checked."""

    def __init__(self, policy: SourcePolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        address = self._policy.address_for(host, port)
        return super().connect_tcp(address, port, timeout, local_address, socket_options)  # type: ignore[arg-type]


class CheckedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool whose every connection goes through the policy."""

    def __init__(self, policy: SourcePolicy, *, retries: int = 0) -> None:
        super().__init__(retries=retries)
        # httpx has no parameter for the network backend: the same pool it builds, with ours.
        limits = httpx.Limits()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=retries,
            network_backend=_CheckedBackend(policy),
        )


def checked_client(policy: SourcePolicy, *, timeout: httpx.Timeout, headers: Sequence[tuple[str, str]]) -> httpx.Client:
    """An httpx client for model downloads: redirects followed, each hop through the policy, no env proxies."""
    return httpx.Client(
        transport=CheckedTransport(policy), timeout=timeout, follow_redirects=True, trust_env=False,
        headers=list(headers),
    )  # fmt: skip
