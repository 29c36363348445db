"""Process logs as an operator reads them: one JSON event per line, with the request, job,
account and worker they belong to, and no secrets."""

import io
import json
import logging

import pytest
from django.test import Client

from buildhub.logs import ContextFilter, JsonFormatter, TextFormatter
from builds import registry
from builds.engine.runner import run_next_job
from tests.builds.engine_helpers import queue_jobs
from tests.support.accounts import make_account


def _logged_executor(context):
    context.add_secret("hunter2-very-secret")
    context.log("signing with hunter2-very-secret and password=swordfish")
    return {}


registry.register_kind("test.logged", _logged_executor)


@pytest.fixture
def captured():
    """What the named loggers write through the production handler set-up (JSON, context)."""
    streams = []

    def capture(name, formatter=None):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(ContextFilter())
        handler.setFormatter(formatter or JsonFormatter())
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        streams.append((logger, handler))
        return stream

    yield capture
    for logger, handler in streams:
        logger.removeHandler(handler)


def events(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.django_db
def test_a_request_id_is_made_or_kept_and_returned():
    client = Client()

    made = client.get("/healthz")["X-Request-ID"]
    kept = client.get("/healthz", HTTP_X_REQUEST_ID="ci-run-42.step-3")["X-Request-ID"]
    replaced = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nInjected: yes")["X-Request-ID"]

    assert len(made) == 32 and made != client.get("/healthz")["X-Request-ID"]
    assert kept == "ci-run-42.step-3"
    assert replaced != "bad id\nInjected: yes" and len(replaced) == 32


@pytest.mark.django_db
def test_a_requests_log_lines_carry_its_id_and_account(api_client_for, captured):
    account = make_account("pro", "Logged Co")
    stream = captured("django.request")

    response = api_client_for(account).get(
        "/api/v1/jobs/00000000-0000-0000-0000-000000000000/", HTTP_X_REQUEST_ID="req-7"
    )

    assert response.status_code == 404
    [event] = events(stream)
    assert event["level"] == "WARNING"
    assert event["logger"] == "django.request"
    assert event["request_id"] == "req-7"
    assert event["account_id"] == str(account.pk)
    assert "job_id" not in event
    assert event["time"].endswith("+00:00")


@pytest.mark.django_db(transaction=True)
def test_a_jobs_lines_reach_the_worker_log_with_its_ids_and_redacted(captured):
    account = make_account("enterprise", "Job Log Co")
    job = queue_jobs(account, 1, kind="test.logged", params={})[0]
    stream = captured("buildhub.jobs.output")
    text = captured("buildhub.jobs.output", TextFormatter())

    run_next_job()

    lines = events(stream)
    assert any("[REDACTED]" in line["message"] for line in lines)
    assert all("hunter2" not in line["message"] for line in lines)
    assert all("swordfish" not in line["message"] for line in lines)
    assert {line["job_id"] for line in lines} == {str(job.pk)}
    assert {line["account_id"] for line in lines} == {str(account.pk)}
    assert all(line["worker_id"] for line in lines)
    readable = text.getvalue().splitlines()[-1]
    assert f"job_id={job.pk}" in readable and "buildhub.jobs.output" in readable


def test_secrets_in_messages_and_tracebacks_are_redacted(captured):
    stream = captured("buildhub.test")
    logger = logging.getLogger("buildhub.test")
    try:
        raise RuntimeError("Authorization: Bearer bh_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAA")
    except RuntimeError:
        logger.exception("calling the registry with token=abc123")

    [event] = events(stream)
    assert "abc123" not in event["message"]
    assert "AAAAAAAAAAAAAAAA" not in event["message"]
    assert "Traceback" in event["message"] and "RuntimeError" in event["message"]
