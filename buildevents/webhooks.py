"""Outgoing webhooks: signed with HMAC-SHA256 over ``"{timestamp}.{body}"``.

Receivers recompute the signature with their endpoint's secret and compare in constant time
(``verify_signature`` is what they need, in any language), and refuse old timestamps so a
captured request cannot be replayed later.
"""

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-BuildHub-Signature"
TIMESTAMP_HEADER = "X-BuildHub-Timestamp"
EVENT_HEADER = "X-BuildHub-Event"
DELIVERY_HEADER = "X-BuildHub-Delivery"
DEFAULT_TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, *, kind: str, delivery_id: int, now=None) -> dict:
    timestamp = int(now if now is not None else time.time())
    return {
        "Content-Type": "application/json",
        "User-Agent": "BuildHub-Webhooks/1",
        EVENT_HEADER: kind,
        DELIVERY_HEADER: str(delivery_id),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now=None,
) -> bool:
    """True when ``signature`` is ours for this body and timestamp, and the timestamp is fresh."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = now if now is not None else time.time()
    if abs(current - sent_at) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent_at, body), signature or "")
