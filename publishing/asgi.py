"""The device update checks answered in the web process's event loop, without entering Django.

Every installed app asks for updates on launch, so the update checks are the busiest
endpoints by far: BuildHub's own ``GET /api/v1/updates/check``, the Expo Updates manifest
(``GET /api/v1/expo/<app key>/manifest``) and the CodePush check (``GET
/v0.1/public/codepush/update_check``, or the legacy ``/updateCheck``). Through Django a warm
check costs several milliseconds of CPU (the request object, the middleware chain, DRF, a hop
to a worker thread and back, and for a signed Expo manifest an RSA signature); here it costs
a dictionary lookup and, at most, a JSON dump.

Only what Django answered before is answered here (publishing.edge remembers it):
- BuildHub's check and CodePush's: the live release and deployment the view looked up, and
  the headers Django sent for this host and scheme; the answer is computed by the same
  functions the views use.
- Expo: the whole answers Django gave for the live release (manifest, directive or 204),
  replayed for requests that would get the same answer (same platform, accepted type,
  signature or not; the device's rollout bucket and current update decide which answer).

A check the edge cannot answer from that (a header or query it does not accept unchanged, an
unknown key, a host or scheme not seen yet, a repeated header, a HEAD) goes to Django, errors
included.
"""

import json
import re
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import parse_qsl

from django.urls import reverse

from buildhub.errors import ServiceError
from buildhub.logs import request_id_for
from buildhub.metrics import UPDATE_CHECKS, Tally
from buildhub.net import address_of
from publishing import checkins, codepush, device_limits, edge, expo, releases
from publishing.choices import Environment

PATH = "/api/v1/updates/check"
EXPO_PATH = re.compile(r"/api/v1/expo/([-_A-Za-z0-9]{1,64})/manifest")
CODEPUSH_PATHS = {"/v0.1/public/codepush/update_check": False, "/updateCheck": True}
MAX_FIELDS = 16  # a query with more fields than this is Django's to judge
MAX_REMEMBERED_BODY = 64 * 1024  # an Expo answer longer than this is not kept
_NOT_REPLAYED = {b"content-length", b"date", b"server", b"set-cookie", b"x-request-id"}
_PER_RESPONSE = {b"content-type", *_NOT_REPLAYED}
_ENVIRONMENTS = frozenset(Environment.values)
_UUID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
_package_path = None
# The update checks' counts: a check adds one in memory (see Tally).
_CHECKS = Tally(
    UPDATE_CHECKS,
    [
        (protocol, answer, served_by)
        for protocol in ("update", "expo", "codepush")
        for answer in ("update", "no_update", "refused", "error")
        for served_by in ("edge", "django")
    ],
)
_CODEPUSH_AVAILABLE = (b'"is_available":true', b'"isAvailable":true')


def _check_answer(protocol: str, status: int, body: bytes) -> str:
    """What a device was told: an update (a manifest, a directive, a package), none, a 429."""
    if status == 204:
        return "no_update"
    if status == 429:
        return "refused"
    if status >= 300:
        return "error"
    if protocol == "codepush" and not any(flag in body for flag in _CODEPUSH_AVAILABLE):
        return "no_update"
    return "update"


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


def _query(scope) -> dict | None:
    try:
        fields = parse_qsl(scope["query_string"].decode("ascii"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    return dict(fields) if len(fields) <= MAX_FIELDS else None


class Answer(NamedTuple):
    """What the edge answers, for which app (its rate limit), and how to record the check."""

    status: int
    headers: list
    body: bytes
    app_key: str
    record: Callable[[], None]


def _json(document) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _update_answer(scope, headers: dict) -> Answer | None:
    """BuildHub's own check, else None."""
    known_origin = edge.origin(_origin_key(scope, headers))
    app_key = headers.get(b"x-app-key")
    if known_origin is None or not app_key:
        return None
    try:
        app_key = app_key.decode("ascii")
    except UnicodeDecodeError:
        return None
    query = _query(scope)
    params = edge.plain_update_query(query) if query is not None else None
    if params is None:
        return None
    entry = edge.remembered_entry(app_key, params["env"], params["app"])
    if entry is None:
        return None
    device = params["device"] or headers.get(b"x-device-id", b"").decode("latin-1")
    release = entry.release
    update = releases.update_for_query(release, params, device)
    offered = release["id"] if release is not None and update is not None else None

    def record():
        checkins.buildhub_check(
            entry.app_id, params["env"], params["platform"], device, params["current"], offered
        )

    base_url, response_headers = known_origin
    if update is None:
        return Answer(204, response_headers, b"", app_key, record)
    if update["bundle_url"].startswith("/"):
        update["bundle_url"] = base_url + update["bundle_url"]
    json_headers = [(b"Content-Type", b"application/json"), *response_headers]
    return Answer(200, json_headers, _json(update), app_key, record)


def _named(headers: dict) -> dict:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in headers.items()}


def _expo_request(named: dict) -> expo.ExpoRequest | None:
    try:
        request = expo.parse_request(named)
    except ServiceError:
        return None  # Django words the error
    return request if request.env in _ENVIRONMENTS else None


def _expo_memo_key(kind: str, request: expo.ExpoRequest, origin_key: tuple) -> tuple:
    return (kind, request.platform, request.accepts, request.expects_signature, origin_key)


def _expo_answer(scope, headers: dict, app_key: str) -> Answer | None:
    named = _named(headers)
    request = _expo_request(named)
    if request is None:
        return None
    entry = edge.remembered_entry(app_key, request.env)
    if entry is None:
        return None
    release = entry.release
    kind = expo.answer_kind(release, request)
    kept = edge.kept_answer(entry, _expo_memo_key(kind, request, _origin_key(scope, headers)))
    if kept is None:
        return None
    offered = release["id"] if release is not None and kind == "manifest" else None

    def record():
        checkins.expo_check(entry.app_id, request.env, request.platform, named, offered)

    return Answer(*kept, app_key, record)


def _package_url(base_url: str):
    global _package_path
    if _package_path is None:
        _package_path = reverse("codepush-package", kwargs={"artifact_id": _UUID_PLACEHOLDER})
    return lambda artifact_id: base_url + _package_path.replace(_UUID_PLACEHOLDER, artifact_id)


def _codepush_answer(scope, headers: dict, legacy: bool) -> Answer | None:
    known = edge.origin(("codepush", legacy, *_origin_key(scope, headers)))
    if known is None:
        return None
    query = _query(scope)
    if query is None:
        return None
    if legacy:
        query = codepush.from_legacy(query)
    deployment = edge.remembered_deployment(query.get("deployment_key", ""))
    if deployment is None:
        return None
    entry = edge.remembered_entry(deployment["app_key"], deployment["env"])
    if entry is None:
        return None
    base_url, response_headers = known
    release = entry.release
    info = codepush.update_info(deployment, release, query, _package_url(base_url))
    offered = release["id"] if release is not None and info["is_available"] else None

    def record():
        env, platform = deployment["env"], deployment["platform"]
        checkins.codepush_check(entry.app_id, env, platform, query, offered)

    body = {"updateInfo": codepush.to_legacy(info)} if legacy else {"update_info": info}
    return Answer(200, response_headers, _json(body), deployment["app_key"], record)


def _address(scope) -> str | None:
    client = scope.get("client") or ("",)
    forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
    return address_of(client[0] or "", b",".join(forwarded).decode("latin-1"))


def _route(scope) -> tuple[str, object] | None:
    """Which of the update checks a request is (and its argument), or None."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    path = scope["path"]
    if path == PATH:
        return "update", None
    if path in CODEPUSH_PATHS:
        return "codepush", CODEPUSH_PATHS[path]
    match = EXPO_PATH.fullmatch(path)
    return ("expo", match.group(1)) if match else None


def _answer(scope, route: str, argument) -> Answer | None:
    headers = dict(scope["headers"])
    if len(headers) != len(scope["headers"]):  # a repeated header: Django joins them
        return None
    if route == "update":
        return _update_answer(scope, headers)
    if route == "codepush":
        return _codepush_answer(scope, headers, argument)
    return _expo_answer(scope, headers, argument)


class _Learner:
    """Watches Django's answer to a check the edge could not give, and keeps what the edge
    needs to give the next ones: the origin's base URL and headers, or the whole answer."""

    def __init__(self, scope, route: str, argument, slot: dict):
        self.scope, self.route, self.argument, self.slot = scope, route, argument, slot
        self.headers = dict(scope["headers"])
        self.start: dict | None = None
        self.chunks: list[bytes] | None = None
        self.expo_request = _expo_request(_named(self.headers)) if route == "expo" else None

    def on_start(self, message) -> None:
        if "origin" not in self.slot or message["status"] not in (200, 204):
            return
        if self.route == "expo":
            if self.expo_request is not None and "entry" in self.slot:
                self.start, self.chunks = message, []
            return
        key = _origin_key(self.scope, self.headers)
        dropped = _PER_RESPONSE
        if self.route == "codepush":  # its own headers (DRF's JSON answer, always a 200)
            key, dropped = ("codepush", self.argument, *key), _NOT_REPLAYED
        kept = [
            (name, value)
            for name, value in message.get("headers", ())
            if name.lower() not in dropped
        ]
        edge.learn_origin(key, self.slot["origin"], kept)

    def on_body(self, message) -> None:
        if self.chunks is None:
            return
        self.chunks.append(message.get("body", b""))
        if sum(len(chunk) for chunk in self.chunks) > MAX_REMEMBERED_BODY:
            self.chunks = None
        elif not message.get("more_body", False):
            start, request = self.start, self.expo_request
            assert start is not None and request is not None  # on_start set both with chunks
            entry = self.slot["entry"]
            kind = expo.answer_kind(entry.release, request)
            replayed = [
                (name, value)
                for name, value in start.get("headers", ())
                if name.lower() not in _NOT_REPLAYED
            ]
            key = _expo_memo_key(kind, request, _origin_key(self.scope, self.headers))
            edge.keep_answer(entry, key, (start["status"], replayed, b"".join(self.chunks)))


class UpdateCheckEdge:
    """ASGI middleware in front of Django for the devices' update checks."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        route = _route(scope)
        if route is None:
            return await self.app(scope, receive, send)
        answer = _answer(scope, *route)
        # Within the app's and the address's device budgets (a refusal is Django's to word).
        if answer is not None and device_limits.wait_for(answer.app_key, _address(scope)) is None:
            answer.record()
            _CHECKS.add((route[0], _check_answer(route[0], answer.status, answer.body), "edge"))
            length = (b"Content-Length", str(len(answer.body)).encode())
            given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
            request_id = (b"X-Request-ID", request_id_for(given).encode())
            headers = [*answer.headers, length, request_id]
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            return await send({"type": "http.response.body", "body": answer.body})
        slot: dict = {}
        scope = {**scope, edge.SCOPE_SLOT: slot}
        learner = _Learner(scope, *route, slot)
        status = []

        async def learn(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
                learner.on_start(message)
            elif message["type"] == "http.response.body":
                learner.on_body(message)
                if status and not message.get("more_body", False):
                    answer = _check_answer(route[0], status[0], message.get("body", b""))
                    _CHECKS.add((route[0], answer, "django"))
            await send(message)

        return await self.app(scope, receive, learn)
