"""Every validation rule of the ingestion endpoint: a 400 that names the field."""

import pytest

from buildevents.models import BuildRun
from tests.support.build_events import event

pytestmark = pytest.mark.django_db

RUN = "9b2f3d1e-8c4a-4f6e-9d0b-1a2b3c4d5e6f"
GOOD = {"runId": RUN, "event": "build_started"}

CASES = [
    ({"event": "build_started"}, "runId", "is required"),
    ({**GOOD, "runId": "not-a-uuid"}, "runId", "must be a UUID"),
    ({**GOOD, "runId": 12}, "runId", "must be a UUID"),
    ({"runId": RUN}, "event", "is required"),
    ({**GOOD, "event": "build_exploded"}, "event", "must be one of"),
    ({**GOOD, "env": "production"}, "env", "must be one of prod, staging, dev"),
    ({**GOOD, "origin": "laptop"}, "origin", "must be one of"),
    ({**GOOD, "event": "stage_started"}, "stage", "is required for stage_started"),
    ({**GOOD, "event": "stage_completed", "stage": "  "}, "stage", "is required"),
    ({**GOOD, "stage": "x" * 201}, "stage", "at most 200 characters"),
    ({**GOOD, "command": ["npm", "run"]}, "command", "must be a string"),
    ({**GOOD, "command": "x" * 1001}, "command", "at most 1000"),
    ({**GOOD, "host": "h" * 256}, "host", "at most 255"),
    ({**GOOD, "repo": "r" * 501}, "repo", "at most 500"),
    ({**GOOD, "branch": "b" * 256}, "branch", "at most 255"),
    ({**GOOD, "commit": "c" * 65}, "commit", "at most 64"),
    ({**GOOD, "pid": "42"}, "pid", "must be an integer"),
    ({**GOOD, "pid": -1}, "pid", "between 0 and"),
    ({**GOOD, "pid": True}, "pid", "must be an integer"),
    ({**GOOD, "durationMs": 1.5}, "durationMs", "must be an integer"),
    ({**GOOD, "durationMs": -5}, "durationMs", "between 0 and"),
    ({**GOOD, "message": "m" * 8193}, "message", "at most 8192"),
    ({**GOOD, "message": "é" * 4097}, "message", "at most 8192 bytes"),
    ({**GOOD, "message": 5}, "message", "must be a string"),
    ({**GOOD, "eventId": ""}, "eventId", "must not be empty"),
    ({**GOOD, "eventId": "e" * 101}, "eventId", "at most 100"),
    ({**GOOD, "ts": "yesterday"}, "ts", "ISO 8601"),
    ({**GOOD, "ts": "2026-03-02T09:00:00"}, "ts", "needs a time zone"),
    ({**GOOD, "ts": True}, "ts", "ISO 8601"),
    ({**GOOD, "ts": 1e30}, "ts", "out of range"),
    ({**GOOD, "ts": "2999-01-01T00:00:00Z"}, "ts", "more than a day in the future"),
    ({**GOOD, "payload": [1, 2]}, "payload", "must be a JSON object"),
    ({**GOOD, "payload": {"log": "x" * 65536}}, "payload", "at most 65536 bytes"),
    ({**GOOD, "payload": {"a": ["ok", "nul\u0000"]}}, "payload", "NUL"),
    ({**GOOD, "message": "before\u0000after"}, "message", "NUL"),
    ({**GOOD, "host": "ci\u0000"}, "host", "NUL"),
]


@pytest.mark.parametrize(("body", "field", "problem"), CASES)
def test_a_bad_event_is_400_naming_the_field(events_client, body, field, problem):
    response = events_client.send(body)

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert problem in error["fields"][field]
    assert field in error["message"]
    assert not BuildRun.objects.exists()


def test_in_a_batch_the_field_names_the_event(events_client):
    batch = [GOOD, {**GOOD, "env": "prod"}, {**GOOD, "durationMs": "soon"}]

    response = events_client.send(batch)

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"events[2].durationMs": "must be an integer"}
    assert not BuildRun.objects.exists()  # nothing of a refused batch is stored


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        (b"{not json", "body", "must be valid JSON"),
        (b"\xff\xfe", "body", "must be valid JSON"),
        (b'"just a string"', "body", "must be an event object or an array"),
        (b"[]", "events", "must not be empty"),
        (b"[1]", "events[0]", "must be a JSON object"),
        (b'{"runId": "x\x00"}', "body", "must not contain NUL bytes"),
    ],
)
def test_a_bad_body_is_400(events_client, body, field, problem):
    response = events_client.send(body)

    assert response.status_code == 400
    assert problem in response.json()["error"]["fields"][field]


def test_a_batch_over_the_limit_is_400(events_client, settings):
    settings.BUILD_EVENTS_MAX_BATCH = 3

    response = events_client.send([GOOD] * 4)

    assert response.status_code == 400
    assert "at most 3 events" in response.json()["error"]["fields"]["events"]


def test_optional_fields_may_be_null_and_unknown_ones_are_ignored(events_client):
    response = events_client.send(
        {**GOOD, "stage": None, "pid": None, "ts": 1767225600000, "future": "ok"}
    )

    assert response.status_code == 200
    assert BuildRun.objects.get().started_at.isoformat() == "2026-01-01T00:00:00+00:00"


def test_an_event_for_a_stage_uses_its_stage(events_client):
    response = events_client.send(event(RUN, "stage_started", stage="Upload"))

    assert response.status_code == 200
