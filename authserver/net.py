"""Who is on the other end: the client address of a request, and how addresses are grouped.

``X-Forwarded-For`` is believed only from a peer listed in ``AUTHSERVER_TRUSTED_PROXIES`` (off by
default): any client can send the header, so trusting it from everyone would let an attacker pick
the address every limit and allow-list sees. The chain is read from the right, skipping trusted
proxies, and the first address that is not one is the client (a proxy appends what it saw, so
what a client wrote itself is further left and never reached past an untrusted hop).

Written here rather than left to uvicorn's ``--proxy-headers`` so the same rule holds under any
ASGI server (the Docker image, a test over ASGI) and the setting is one of ours.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from starlette.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Big enough for any real proxy chain; a longer header is an attacker's and is not walked.
MAX_FORWARDED_HOPS = 20


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR blocks (a bare address is a /32 or /128); ValueError names the first bad one."""
    networks = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR block") from None
    return tuple(networks)


@lru_cache(maxsize=4096)
def parse_address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d; it is that IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address.version == net.version and address in net for net in networks)


def client_address(conn: HTTPConnection, trusted_proxies: tuple[Network, ...] = ()) -> str | None:
    """The client's address as text (None when the server gives no peer, e.g. a Unix socket)."""
    peer = conn.client.host if conn.client else None
    if not trusted_proxies:
        return peer
    address = parse_address(peer)
    if not in_networks(address, trusted_proxies):
        return peer
    hops = [hop.strip() for hop in ",".join(conn.headers.getlist("x-forwarded-for")).split(",") if hop.strip()]
    for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
        candidate = parse_address(without_port(hop))
        if candidate is None:
            return peer  # garbage from the chain is never believed; the proxy itself answers for it
        if not in_networks(candidate, trusted_proxies):
            return str(candidate)
    return peer


def without_port(hop: str) -> str:
    """A forwarded hop without the port some proxies write with it (Azure Application Gateway:
    ``203.0.113.9:4242``, ``[2001:db8::1]:4242``). Read as garbage, such a hop made every client the
    proxy itself: one address for every limit, and inside any allow-list that admits the proxy."""
    if hop.startswith("["):
        address, bracket, rest = hop[1:].partition("]")
        return address if bracket and (not rest or (rest[0] == ":" and rest[1:].isdigit())) else hop
    address, colon, port = hop.partition(":")
    return address if colon and port.isdigit() and ":" not in port else hop


def address_group(ip: str | None) -> str | None:
    """The unit limits count by: an IPv4 address, or the /64 an IPv6 address belongs to.

    One IPv6 subscriber usually holds a whole /64, so counting single addresses would give an
    attacker 2^64 fresh ones.
    """
    address = parse_address(ip)
    if address is None:
        return ip
    if address.version == 6:
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
