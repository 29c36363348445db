"""Checks on posted build events: each refusal names the field, as ``events[i].field`` in a batch.

Written by hand rather than with a DRF serializer: ingestion is a hot path (thousands of
events a second) and every rule is a plain type or length check.
"""

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field

from django.conf import settings

from buildevents.choices import STAGE_EVENTS, EventKind, RunEnv, RunOrigin
from buildhub.errors import ServiceError

MAX_MESSAGE_BYTES = 8 * 1024
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DURATION_MS = 31 * 24 * 3600 * 1000  # a month: anything longer is a client bug
# Build hosts' clocks drift, but a time this far ahead would pin a run's stage for good.
MAX_CLOCK_AHEAD = dt.timedelta(days=1)
EVENT_KINDS = frozenset(EventKind.values)
ENUM_FIELDS = {"env": (frozenset(RunEnv.values), ", ".join(RunEnv.values))}
ENUM_FIELDS["origin"] = (frozenset(RunOrigin.values), ", ".join(RunOrigin.values))
# Text fields: JSON name → (model attribute, maximum length in characters).
TEXT_FIELDS = {
    "command": ("command", 1000),
    "host": ("host", 255),
    "repo": ("repo", 500),
    "branch": ("branch", 255),
    "commit": ("commit", 64),
    "stage": ("stage", 200),
}


@dataclass
class EventIn:
    """One validated event, with client names turned into model names."""

    run_id: uuid.UUID
    event: str
    ts: dt.datetime | None = None
    event_id: str | None = None
    env: str = ""
    origin: str = ""
    command: str = ""
    host: str = ""
    pid: int | None = None
    stage: str = ""
    message: str = ""
    duration_ms: int | None = None
    repo: str = ""
    branch: str = ""
    commit: str = ""
    payload: dict = field(default_factory=dict)


class EventRejected(ServiceError):
    pass


class BodyTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


def _refuse(name: str, problem: str):
    raise EventRejected(f"Invalid input: {name}: {problem}", fields={name: problem})


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _text(raw, name: str, limit: int) -> str:
    if not isinstance(raw, str):
        _refuse(name, "must be a string")
    if "\x00" in raw:
        _refuse(name, "must not contain NUL bytes")
    if len(raw) > limit:
        _refuse(name, f"must be at most {limit} characters")
    return raw


def _int(raw, name: str, maximum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        _refuse(name, "must be an integer")
    if not 0 <= raw <= maximum:
        _refuse(name, f"must be between 0 and {maximum}")
    return raw


def _timestamp(raw, name: str) -> dt.datetime:
    """ISO 8601 with a zone, or milliseconds since the epoch (what JavaScript's Date.now gives)."""
    if isinstance(raw, bool):
        _refuse(name, "must be an ISO 8601 time or epoch milliseconds")
    if isinstance(raw, int | float):
        try:
            return dt.datetime.fromtimestamp(raw / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            _refuse(name, "is out of range")
    if not isinstance(raw, str) or "\x00" in raw:
        _refuse(name, "must be an ISO 8601 time or epoch milliseconds")
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        _refuse(name, "must be an ISO 8601 time or epoch milliseconds")
    if moment.tzinfo is None:
        _refuse(name, "needs a time zone (e.g. 2025-01-31T12:00:00Z)")
    return moment


def _not_ahead(moment: dt.datetime, name: str) -> dt.datetime:
    if moment - dt.datetime.now(dt.UTC) > MAX_CLOCK_AHEAD:
        _refuse(name, "is more than a day in the future")
    return moment


def parse_event(raw, prefix: str = "") -> EventIn:
    def name(key):
        return f"{prefix}{key}"

    if not isinstance(raw, dict):
        _refuse(prefix.rstrip(".") or "body", "must be a JSON object")
    if "runId" not in raw:
        _refuse(name("runId"), "is required")
    run_id = raw["runId"]
    try:
        run_id = uuid.UUID(run_id) if isinstance(run_id, str) else None
    except ValueError:
        run_id = None
    if run_id is None:
        _refuse(name("runId"), "must be a UUID")
    event = raw.get("event")
    if event is None:
        _refuse(name("event"), "is required")
    if not isinstance(event, str) or event not in EVENT_KINDS:
        _refuse(name("event"), f"must be one of {', '.join(EventKind.values)}")
    parsed = EventIn(run_id=run_id, event=event)
    for key, (allowed, listed) in ENUM_FIELDS.items():
        value = raw.get(key)
        if value is not None:
            if not isinstance(value, str) or value not in allowed:
                _refuse(name(key), f"must be one of {listed}")
            setattr(parsed, key, value)
    for key, (attribute, limit) in TEXT_FIELDS.items():
        value = raw.get(key)
        if value is not None:
            setattr(parsed, attribute, _text(value, name(key), limit))
    if event in STAGE_EVENTS and not parsed.stage.strip():
        _refuse(name("stage"), f"is required for {event}")
    message = raw.get("message")
    if message is not None:
        _text(message, name("message"), MAX_MESSAGE_BYTES)
        if len(message.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
            _refuse(name("message"), f"must be at most {MAX_MESSAGE_BYTES} bytes")
        parsed.message = message
    if raw.get("pid") is not None:
        parsed.pid = _int(raw["pid"], name("pid"), 2**31 - 1)
    if raw.get("durationMs") is not None:
        parsed.duration_ms = _int(raw["durationMs"], name("durationMs"), MAX_DURATION_MS)
    if raw.get("eventId") is not None:
        event_id = _text(raw["eventId"], name("eventId"), 100)
        if not event_id:
            _refuse(name("eventId"), "must not be empty")
        parsed.event_id = event_id
    if raw.get("ts") is not None:
        parsed.ts = _not_ahead(_timestamp(raw["ts"], name("ts")), name("ts"))
    payload = raw.get("payload")
    if payload is not None:
        if not isinstance(payload, dict):
            _refuse(name("payload"), "must be a JSON object")
        if _has_nul(payload):
            _refuse(name("payload"), "must not contain NUL bytes")
        if len(json.dumps(payload, separators=(",", ":"))) > MAX_PAYLOAD_BYTES:
            _refuse(name("payload"), f"must be at most {MAX_PAYLOAD_BYTES} bytes as JSON")
        parsed.payload = payload
    return parsed


def parse_body(body: bytes) -> tuple[list[EventIn], bool]:
    """The events of a request body (one object or an array); and whether it was a batch."""
    limit = settings.BUILD_EVENTS_MAX_BODY_BYTES
    if len(body) > limit:
        raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
    if b"\x00" in body:
        _refuse("body", "must not contain NUL bytes")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        _refuse("body", "must be valid JSON")
    if isinstance(data, dict):
        return [parse_event(data)], False
    if not isinstance(data, list):
        _refuse("body", "must be an event object or an array of them")
    if not data:
        _refuse("events", "must not be empty")
    if len(data) > settings.BUILD_EVENTS_MAX_BATCH:
        _refuse("events", f"must hold at most {settings.BUILD_EVENTS_MAX_BATCH} events")
    return [parse_event(item, f"events[{index}].") for index, item in enumerate(data)], True
