"""The Expo Updates protocol, version 1, over BuildHub's releases.

An app built with ``expo-updates`` puts its ``expo_updates_url`` (``/api/v1/expo/<app
key>/manifest``) in ``updates.url``. Its requests name the platform, the runtime version and
the channel (a BuildHub environment: ``production``, ``staging``, ``dev``); the answer is the
live release of that environment as an Expo manifest, whose launch asset is the release's
Hermes bundle, served by ``/api/v1/expo/assets/<artifact id>`` (immutable, gzip or brotli
as the client accepts). With ``expo-expect-signature`` every manifest part is signed with
the app's key (publishing.signing).
"""

import base64
import functools
import gzip
import json
import re
import secrets
import uuid
from dataclasses import dataclass

import brotli

from buildhub.errors import ServiceError
from publishing import releases
from publishing.choices import Environment, Platform

PROTOCOL_VERSION = "1"
MULTIPART, EXPO_JSON, JSON = "multipart/mixed", "application/expo+json", "application/json"
SERVED_TYPES = (MULTIPART, EXPO_JSON, JSON)
LAUNCH_ASSET_TYPE = "application/javascript"
MANIFEST_NAMESPACE = uuid.UUID("8b0f5a8e-0c52-4b8e-9e33-6c3c1a6f2d11")
RUNTIME_VERSION = re.compile(r"^[\x21-\x7e]{1,64}$")  # printable, no spaces
CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
COMMON_HEADERS = {
    "expo-protocol-version": PROTOCOL_VERSION,
    "expo-sfv-version": "0",
    "expo-manifest-filters": "",  # an empty Expo SFV dictionary: no filter
    "expo-server-defined-headers": "",
    "cache-control": "private, max-age=0",
}
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
# Read on every check: Django's choices build their lists afresh each time they are asked.
PLATFORMS, ENVIRONMENTS = frozenset(Platform.values), frozenset(Environment.values)


@dataclass(frozen=True)
class ExpoRequest:
    platform: str
    runtime_version: str
    env: str
    current_update_id: str
    client_id: str
    expects_signature: bool
    accepts: str  # the response type chosen by proactive negotiation


def _bad(message: str, header: str) -> ServiceError:
    return ServiceError(message, fields={header: message})


def negotiate(accept: str) -> str | None:
    """The served type the ``accept`` header prefers (q values, then the client's order)."""
    if not accept.strip():
        return MULTIPART
    best, best_q = None, 0.0
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        candidates = (
            SERVED_TYPES
            if media == "*/*"
            else (MULTIPART,)
            if media == "multipart/*"
            else (EXPO_JSON, JSON)
            if media == "application/*"
            else (media,)
        )
        for candidate in candidates:
            if candidate in SERVED_TYPES and quality > best_q:
                best, best_q = candidate, quality
    return best


def parse_request(headers) -> ExpoRequest:
    """The request's constraints; a missing or bad one is a 400 naming the header."""
    version = headers.get("expo-protocol-version", PROTOCOL_VERSION).strip()
    if version not in ("0", PROTOCOL_VERSION):
        raise ServiceError(
            f"expo-protocol-version {version[:20]!r} is not served here; this server speaks "
            "version 1.",
            code="not_acceptable",
            status=406,
        )
    platform = headers.get("expo-platform", "").strip()
    if platform not in PLATFORMS:
        raise _bad("expo-platform must be ios or android.", "expo-platform")
    runtime_version = headers.get("expo-runtime-version", "").strip()
    if not RUNTIME_VERSION.match(runtime_version):
        raise _bad(
            "expo-runtime-version is required: 1 to 64 printable characters.",
            "expo-runtime-version",
        )
    accepts = negotiate(headers.get("accept", ""))
    if accepts is None:
        raise ServiceError(
            f"Nothing here matches accept: {headers.get('accept', '')[:100]!r}; this server "
            f"answers {', '.join(SERVED_TYPES)}.",
            code="not_acceptable",
            status=406,
        )
    client_id = headers.get("eas-client-id", "").strip()
    return ExpoRequest(
        platform=platform,
        runtime_version=runtime_version,
        env=headers.get("expo-channel-name", "").strip() or Environment.PRODUCTION,
        current_update_id=headers.get("expo-current-update-id", "").strip().lower(),
        client_id=client_id if CLIENT_ID.match(client_id) else "",
        expects_signature="expo-expect-signature" in headers,
        accepts=accepts,
    )


@functools.lru_cache(maxsize=4096)
def manifest_id(release_id: int, platform: str) -> str:
    """A release's manifest id for a platform: a UUID that never changes for it."""
    return str(uuid.uuid5(MANIFEST_NAMESPACE, f"release:{release_id}:{platform}"))


def hash_of(sha256_hex: str) -> str:
    """The asset ``hash`` of the protocol: base64url SHA-256 without padding."""
    return base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).rstrip(b"=").decode()


def offers_update(release: dict | None, request: ExpoRequest) -> bool:
    """Whether ``request`` gets ``release`` as a new update (a manifest) rather than a 204."""
    if release is None or request.env not in ENVIRONMENTS:
        return False
    update = releases.check_for_update(
        release,
        platform=request.platform,
        runtime_version=request.runtime_version,
        device_id=request.client_id,
    )
    return update is not None and (
        manifest_id(release["id"], request.platform) != request.current_update_id
    )


def answer_kind(release: dict | None, request: ExpoRequest) -> str:
    """What the answer to ``request`` is: "directive", "manifest" or "none" (a 204)."""
    if directive_for(release, request) is not None:
        return "directive"
    return "manifest" if offers_update(release, request) else "none"


def manifest_for(release: dict | None, request: ExpoRequest, asset_url) -> dict | None:
    """The manifest of the update ``request`` should get from ``release``, or None."""
    if release is None or not offers_update(release, request):
        return None
    manifest = release["manifest"]
    bundle = manifest["bundles"][request.platform]
    identifier = manifest_id(release["id"], request.platform)
    return {
        "id": identifier,
        "createdAt": manifest["published_at"],
        "runtimeVersion": manifest["runtime_version"],
        "launchAsset": {
            "hash": hash_of(bundle["sha256"]),
            "key": bundle["sha256"][:32],
            "contentType": LAUNCH_ASSET_TYPE,
            "url": asset_url(bundle["artifact"]),
        },
        "assets": [],
        "metadata": {},
        "extra": {
            "buildhub": {
                "app": manifest["app"],
                "version": manifest["version"],
                "environment": manifest["env"],
                "releaseId": release["id"],
                "mandatory": bool(release.get("mandatory")),
            }
        },
    }


def directive_for(release: dict | None, request: ExpoRequest) -> dict | None:
    """The directive ``request`` should get from ``release`` (a roll back to the embedded
    bundle, for devices of its runtime version), or None."""
    if not release or not release.get("directive") or request.env not in ENVIRONMENTS:
        return None
    manifest = release["manifest"]
    if manifest.get("runtime_version") != request.runtime_version:
        return None
    return {"type": release["directive"], "parameters": {"commitTime": manifest["published_at"]}}


def multipart(parts: list[tuple[str, bytes, dict]]) -> tuple[str, bytes]:
    """``multipart/mixed`` of ``(name, body, extra part headers)``: content type and body."""
    boundary = f"buildhub-{secrets.token_hex(12)}"
    chunks = []
    for name, body, extra in parts:
        head = [
            f"--{boundary}",
            f'content-disposition: inline; name="{name}"',
            "content-type: application/json; charset=utf-8",
            *(f"{header}: {value}" for header, value in extra.items()),
        ]
        chunks.append("\r\n".join(head).encode() + b"\r\n\r\n" + body + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return f"{MULTIPART}; boundary={boundary}", body


def encode(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def best_encoding(accept_encoding: str) -> str:
    """The encoding to send for ``accept-encoding``: brotli, gzip, or '' (as it is)."""
    accepted = {
        item.split(";")[0].strip().lower()
        for item in accept_encoding.split(",")
        if item.strip() and not re.search(r";\s*q=0(\.0*)?\s*$", item)
    }
    return "br" if "br" in accepted else "gzip" if "gzip" in accepted else ""


# An asset's bytes never change (it is addressed by its id and checked by its sha256), so a
# process encodes each one once per encoding: every device of a fleet asks for the same few.
_encoded: dict[tuple[str, str], bytes] = {}
REMEMBERED_ASSETS = 32
REMEMBERED_MAX_BYTES = 16 * 1024 * 1024


def asset_body(sha256: str, encoding: str, read) -> bytes:
    """The asset with this sha256 in ``encoding``; ``read()`` gives its bytes when needed."""
    body = _encoded.get((sha256, encoding))
    if body is None:
        data = read()
        if encoding == "br":
            body = brotli.compress(data, quality=5)
        elif encoding == "gzip":
            body = gzip.compress(data, compresslevel=6, mtime=0)
        else:
            body = data
        if len(data) <= REMEMBERED_MAX_BYTES:
            if len(_encoded) >= REMEMBERED_ASSETS:
                _encoded.clear()
            _encoded[(sha256, encoding)] = body
    return body
