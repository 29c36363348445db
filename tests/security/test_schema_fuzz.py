"""schemathesis against the served OpenAPI schema: every operation, with a token holding every
scope of an account that owns real objects, gets generated requests (valid and invalid); no
answer is a 5xx and every answer matches what the schema says of it.

Runs in-process through the WSGI app with a bounded number of examples per operation, so it
stays a part of ``make test``.
"""

import json

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.endpoints import SCHEMA, object_for

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

django_app = get_wsgi_application()


def wsgi_server(environ, start_response):
    """The app as a WSGI server runs it: the answer is read, then closed (PEP 3333), which
    is what closes a FileResponse's file."""
    answer = django_app(environ, start_response)
    try:
        return [b"".join(answer)]
    finally:
        answer.close()


schema = schemathesis.openapi.from_dict(json.loads(OpenApiJsonRenderer().render(SCHEMA)))
schema.app = wsgi_server


@pytest.fixture
def keep_test_connection():
    """As Django's test client does: the WSGI handler must not close the connection that
    holds the test's transaction at the end of each request."""
    handlers = (signals.request_started, signals.request_finished)
    for signal in handlers:
        signal.disconnect(close_old_connections)
    yield
    for signal in handlers:
        signal.connect(close_old_connections)


# Operations for staff only: called with a staff session as well as the account's token.
STAFF_PREFIXES = ("/api/v1/admin/",)


@pytest.fixture
def staff_cookies(django_user_model):
    staff = django_user_model.objects.create(username="fuzz-staff", is_staff=True)
    client = Client()
    client.force_login(staff)
    return {"sessionid": client.cookies["sessionid"].value}


@pytest.fixture
def owner_headers(victim, settings, keep_test_connection):
    # The fuzzer sends hundreds of requests; the limits themselves are tested in test_tokens.
    settings.API_RATE_LIMIT = "100000/m"
    settings.JOBS_SUBMIT_RATE = "100000/m"
    settings.JOBS_READ_RATE = "100000/m"
    return {"Authorization": f"Bearer {victim.client.secret}"}


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_matches_its_schema(case, victim, owner_headers, staff_cookies):
    case.call_and_validate(headers=owner_headers, checks=CHECKS)
    if case.path.startswith(STAFF_PREFIXES):
        case.call_and_validate(cookies=staff_cookies, checks=CHECKS)
    if case.path_parameters:
        # The same request on objects that exist, so more than the 404 path is exercised.
        case.path_parameters = {
            name: object_for(case.path, name, victim) for name in case.path_parameters
        }
        case.call_and_validate(headers=owner_headers, checks=CHECKS)


@pytest.mark.django_db
def test_the_fuzzed_schema_is_the_served_one(client):
    served = client.get("/api/schema/", {"format": "json"})

    assert served.status_code == 200
    assert served.json() == json.loads(OpenApiJsonRenderer().render(SCHEMA))
