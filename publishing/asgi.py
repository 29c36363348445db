"""The device update check answered in the web process's event loop, without entering Django.

Every installed app asks ``GET /api/v1/updates/check`` on launch, so it is the busiest
endpoint by far. Through Django a warm check costs about 5 ms of CPU (the request object, the
middleware chain, DRF, and a hop to a worker thread and back); here it costs a dictionary
lookup and a JSON dump.

Only what Django answered before is answered here (publishing.edge remembers it). A check
the edge cannot answer from that (a query the fast validator does not accept unchanged, an
unknown or missing key, a slug that does not match, a host or scheme not seen yet, a repeated
header, a HEAD) goes to Django, errors included.
"""

import json
from urllib.parse import parse_qsl

from publishing import edge, releases

PATH = "/api/v1/updates/check"
MAX_FIELDS = 16  # a query with more fields than this is Django's to judge
_PER_RESPONSE = {b"content-type", b"content-length", b"date", b"server", b"set-cookie"}


def _origin_key(scope, headers: dict) -> tuple:
    # Everything build_absolute_uri and the security middleware look at to tell hosts and
    # schemes apart; an entry is reused only for requests that agree on all of them.
    return (
        scope.get("scheme", "http"),
        headers.get(b"host"),
        headers.get(b"x-forwarded-host"),
        headers.get(b"x-forwarded-proto"),
        headers.get(b"x-forwarded-port"),
    )


def _answer(scope) -> tuple[int, list, bytes] | None:
    """Status, headers and body for a check the edge can answer, else None."""
    headers = dict(scope["headers"])
    if len(headers) != len(scope["headers"]):  # a repeated header: Django joins them
        return None
    known_origin = edge.origin(_origin_key(scope, headers))
    app_key = headers.get(b"x-app-key")
    if known_origin is None or not app_key:
        return None
    try:
        fields = parse_qsl(scope["query_string"].decode("ascii"), keep_blank_values=True)
        app_key = app_key.decode("ascii")
    except UnicodeDecodeError:
        return None
    params = edge.plain_update_query(dict(fields)) if len(fields) <= MAX_FIELDS else None
    if params is None:
        return None
    known, release = edge.remembered_release(app_key, params["env"], params["app"])
    if not known:
        return None
    device_header = headers.get(b"x-device-id", b"").decode("latin-1")
    update = releases.update_for_query(release, params, device_header)
    base_url, response_headers = known_origin
    if update is None:
        return 204, response_headers, b""
    if update["bundle_url"].startswith("/"):
        update["bundle_url"] = base_url + update["bundle_url"]
    body = json.dumps(update, separators=(",", ":"), ensure_ascii=False).encode()
    return 200, [(b"Content-Type", b"application/json"), *response_headers], body


class UpdateCheckEdge:
    """ASGI middleware in front of Django for ``GET /api/v1/updates/check``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        answer = _answer(scope)
        if answer is not None:
            status, headers, body = answer
            length = (b"Content-Length", str(len(body)).encode())
            start = {"type": "http.response.start", "status": status, "headers": [*headers, length]}
            await send(start)
            return await send({"type": "http.response.body", "body": body})
        slot = {}
        scope = {**scope, edge.SCOPE_SLOT: slot}

        async def learn(message):
            # The view filled the slot: this host and scheme's base URL and headers are known.
            if (
                message["type"] == "http.response.start"
                and "origin" in slot
                and message["status"] in (200, 204)
            ):
                kept = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() not in _PER_RESPONSE
                ]
                edge.learn_origin(_origin_key(scope, dict(scope["headers"])), slot["origin"], kept)
            await send(message)

        return await self.app(scope, receive, learn)
