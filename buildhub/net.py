"""The client address of a request, as far as the trusted proxies in front of us vouch for it."""

import ipaddress

from django.conf import settings


def _valid_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request) -> str | None:
    """``REMOTE_ADDR``, or the address ``TRUSTED_PROXY_COUNT`` hops back in X-Forwarded-For.

    Each trusted proxy appends the address it received the request from, so with N proxies
    the client is the N-th entry from the right; anything further left was written by the
    client itself and is not believed. ``None`` when no valid address is known.
    """
    meta = request.META
    return address_of(meta.get("REMOTE_ADDR", "") or "", meta.get("HTTP_X_FORWARDED_FOR", ""))


def address_of(remote_addr: str, forwarded_for: str) -> str | None:
    """client_ip from the peer's address and the X-Forwarded-For header (an ASGI scope's)."""
    remote = _valid_ip(remote_addr)
    hops = settings.TRUSTED_PROXY_COUNT
    if hops <= 0:
        return remote
    forwarded = [part for part in forwarded_for.split(",") if part]
    if len(forwarded) < hops:
        return remote
    return _valid_ip(forwarded[-hops])
