"""What the web process remembers of update checks Django answered, for the edge in front of
Django (publishing.asgi) to answer the same checks again without it.

- A check that reaches the view leaves behind the app's live release (``remember``) and, from
  the response Django sent, the absolute URL base and the response headers for that host and
  scheme (security headers, HSTS, whatever middleware adds: ``learn_origin``).
- A release is trusted for ``UPDATE_CHECK_EDGE_SECONDS``. Publish, rollback and app changes
  drop it at once in the process that made them (``forget``); other processes see them
  within that time (plus the moment one check takes to refresh it). Setting it to 0 sends
  every check to Django.
"""

import re
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from typing_extensions import TypeIs

from publishing.choices import Environment, Platform

MAX_ENTRIES = 10_000  # per memo and process; beyond that a memo starts afresh
REFRESH_SECONDS = 2  # an expired entry is served while a refresh has been under way this long
SCOPE_SLOT = "buildhub.edge"  # the ASGI scope key the view leaves the origin in


@dataclass(slots=True)
class _Kept:
    """Something Django said, trusted until ``fresh_until`` (time.monotonic()); see usable()."""

    fresh_until: float
    value: Any
    refreshing_since: float | None = None


def usable(kept: "_Kept | _Entry | None") -> TypeIs["_Kept | _Entry"]:
    """Whether the edge may answer from ``kept``: while it is fresh, and once it has expired
    while the one check that went to Django to refresh it is under way (for at most
    ``REFRESH_SECONDS``), so that the devices of a busy app do not all pile onto Django."""
    if kept is None:
        return False
    now = time.monotonic()
    if now < kept.fresh_until:
        return True
    if kept.refreshing_since is None or now - kept.refreshing_since > REFRESH_SECONDS:
        kept.refreshing_since = now  # this check refreshes it
        return False
    return True


@dataclass(slots=True)
class _Entry:
    fresh_until: float  # time.monotonic()
    slug: str
    release: dict | None
    app_id: int
    refreshing_since: float | None = None
    # Whole answers Django gave for this release (the Expo manifests, signed or not, keyed
    # by what they depend on), each a _Kept: replayed by the edge while usable.
    responses: dict[tuple, _Kept] = field(default_factory=dict)


# A whole answer as Django sent it: status, headers, body.
KeptAnswer = tuple[int, list, bytes]


_releases: dict[tuple[str, str], _Entry] = {}
_origins: dict[tuple, tuple[str, list]] = {}
_deployments: dict[str, _Kept] = {}

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
_PLATFORMS, _ENVIRONMENTS = frozenset(Platform.values), frozenset(Environment.values)


def _plain(value: str, max_length: int) -> bool:
    return 0 < len(value) <= max_length and value == value.strip() and value.isprintable()


def plain_update_query(query) -> dict | None:
    """The update check's query when every value is plainly valid, else None.

    The hot path of every device: validating an ordinary query by hand costs a fraction of
    UpdateCheckQuerySerializer (measured: about half the view's CPU time). It accepts only
    what the serializer accepts unchanged; whatever else (blanks, padding, bad values)
    goes to the serializer, so answers and errors stay exactly the serializer's.
    """
    app, platform = query.get("app", ""), query.get("platform", "")
    runtime_version = query.get("runtime_version", "")
    channel, env = query.get("channel"), query.get("env")
    current, device = query.get("current"), query.get("device")
    if not (
        _SLUG.fullmatch(app)
        and platform in _PLATFORMS
        and _plain(runtime_version, 64)
        and (channel is None or _plain(channel, 32))
        and (env is None or env in _ENVIRONMENTS)
        and (current is None or _SHA256.fullmatch(current))
        and (device is None or _plain(device, 128))
    ):
        return None
    return {
        "app": app,
        "platform": platform,
        "runtime_version": runtime_version,
        "channel": channel or "",
        "env": env or Environment.PRODUCTION,
        "current": current or "",
        "device": device or "",
    }


def remember(request, app_key: str, env: str, slug: str, release: dict | None, app_id: int) -> None:
    """Called by the view once a check succeeded: what the edge may answer from."""
    slot = getattr(request, "scope", {}).get(SCOPE_SLOT)
    seconds = settings.UPDATE_CHECK_EDGE_SECONDS
    if slot is None or seconds <= 0:
        return
    if len(_releases) >= MAX_ENTRIES:
        _releases.clear()
    now = time.monotonic()
    entry = _releases.get((app_key, env))
    if entry is None or now >= entry.fresh_until or (entry.slug, entry.release) != (slug, release):
        renewed = _Entry(now + seconds, slug, release, app_id)
        if entry is not None and (entry.slug, entry.release) == (slug, release):
            # The same release: its answers stay, each refreshed on its own time.
            renewed.responses = entry.responses
        _releases[(app_key, env)] = entry = renewed
    slot["entry"] = entry
    slot["origin"] = request.build_absolute_uri("/")[:-1]


def remember_deployment(request, key: str, deployment: dict) -> None:
    """A CodePush deployment key's app, environment and platform, for the edge."""
    seconds = settings.UPDATE_CHECK_EDGE_SECONDS
    if SCOPE_SLOT not in getattr(request, "scope", {}) or seconds <= 0:
        return
    if len(_deployments) >= MAX_ENTRIES:
        _deployments.clear()
    _deployments[key] = _Kept(time.monotonic() + seconds, deployment)


def remembered_deployment(key: str) -> dict | None:
    found = _deployments.get(key)
    return found.value if usable(found) else None


def keep_answer(entry: _Entry, key: tuple, answer: KeptAnswer) -> None:
    """A whole answer Django gave for ``entry``'s release, for requests that get the same."""
    entry.responses[key] = _Kept(time.monotonic() + settings.UPDATE_CHECK_EDGE_SECONDS, answer)


def kept_answer(entry: _Entry, key: tuple) -> KeptAnswer | None:
    found = entry.responses.get(key)
    return found.value if usable(found) else None


def forget(app_key: str, env: str | None = None) -> None:
    """Drop what this process remembers of an app (one environment, or all)."""
    for key in [key for key in _releases if key[0] == app_key and env in (None, key[1])]:
        _releases.pop(key, None)
    if env is None:
        for deployment_key in [
            key for key, kept in _deployments.items() if kept.value["app_key"] == app_key
        ]:
            _deployments.pop(deployment_key, None)


def remembered_release(app_key: str, env: str, slug: str) -> tuple[bool, dict | None]:
    """(known, release) for the app named ``slug`` whose key this is.

    An expired entry is refreshed by one check while the others are answered from it (see
    usable()).
    """
    entry = remembered_entry(app_key, env, slug)
    return (True, entry.release) if entry is not None else (False, None)


def remembered_entry(app_key: str, env: str, slug: str | None = None) -> _Entry | None:
    """The entry of an app's environment (of the app named ``slug``, if given) while it may
    be answered from (see remembered_release)."""
    entry = _releases.get((app_key, env))
    if entry is None or slug not in (None, entry.slug):
        return None
    return entry if usable(entry) else None


def learn_origin(key: tuple, base_url: str, headers: list) -> None:
    if len(_origins) >= MAX_ENTRIES:
        _origins.clear()
    _origins[key] = (base_url, headers)


def origin(key: tuple) -> tuple[str, list] | None:
    """The base URL and the response headers Django used for this host and scheme."""
    return _origins.get(key)
