"""Who is asking: the one place a request or a websocket scope becomes the `Identity` the
limiter checks.

The identity is the *authenticated* user: for DRF views, the user DRF's authentication
classes set (`request.user`, which DRF also sets on Django's request); for everything else,
the user Django's session middleware set, or Channels' `scope["user"]` on a socket. So the
limiter never parses a credential itself, and can never limit someone other than the caller
authentication let in. Without a user the identity is the client's IP address.

The client IP is the peer's address, or, when the peer is a trusted reverse proxy
(THROTTLE_TRUSTED_PROXIES, CIDRs), the address that proxy reports in X-Forwarded-For: the
list is read from the right, skipping every trusted proxy, and the first untrusted address is
the client (entries to its left are whatever the client sent, never trusted)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from django.conf import settings

from openspark.core.state import process_memo


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: int | None
    plan_id: int | None
    ip: str

    @property
    def who(self) -> str:
        return f"u:{self.user_id}" if self.user_id else f"ip:{self.ip}"


@process_memo(maxsize=8192)
def ip_normalize(raw: str) -> str | None:
    """A canonical address; IPv6 clients are keyed by their /64, the block one host gets."""
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    if address.version == 6:
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@process_memo(maxsize=1)
def _trusted_networks(spec: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def _trusted(address: str) -> bool:
    networks = _trusted_networks(tuple(settings.THROTTLE_TRUSTED_PROXIES))
    if not networks:
        return False
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if parsed.version == 6 and parsed.ipv4_mapped:
        parsed = parsed.ipv4_mapped
    return any(parsed in network for network in networks)


def client_ip_from(*, peer: str, forwarded_for: str) -> str:
    """The client's address, given the TCP peer and the X-Forwarded-For header (joined with
    commas when repeated)."""
    address = peer or ""
    if forwarded_for and _trusted(address):
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        while hops and _trusted(address):
            address = hops.pop()
    return ip_normalize(address) or "unknown"


def client_ip(request) -> str:
    """The client's address for an HTTP request (Django's or DRF's)."""
    meta = request.META
    return client_ip_from(
        peer=meta.get("REMOTE_ADDR", ""), forwarded_for=meta.get("HTTP_X_FORWARDED_FOR", "")
    )


def scope_client_ip(scope) -> str:
    """The client's address for an ASGI scope (a websocket)."""
    client = scope.get("client") or ("", 0)
    forwarded = b",".join(
        value for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"
    )
    return client_ip_from(peer=client[0] or "", forwarded_for=forwarded.decode("latin-1"))


def identity_for(*, user, ip: str) -> Identity:
    """The one constructor: an authenticated user is limited as that user (on their plan),
    anyone else by address."""
    if user is not None and user.is_authenticated:
        return Identity(user.pk, getattr(user, "plan_id", None), ip)
    return Identity(None, None, ip)


def request_identity(request) -> Identity:
    """The caller of an HTTP request, as authentication decided it (see the module doc)."""
    return identity_for(user=getattr(request, "user", None), ip=client_ip(request))


def scope_identity(scope) -> Identity:
    """The caller of a websocket, as Channels' session authentication decided it."""
    return identity_for(user=scope.get("user"), ip=scope_client_ip(scope))
