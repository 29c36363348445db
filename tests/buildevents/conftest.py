import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from builds.choices import TokenScope
from builds.services import create_api_token
from tests.support.build_events import EventsClient


@pytest.fixture
def token_for(db):
    def issue(account, scopes=(TokenScope.EVENTS_WRITE,)):
        return create_api_token(account, name="ci", scopes=list(scopes)).secret

    return issue


@pytest.fixture
def events_client(pro_account, token_for, clear_cache):
    client = EventsClient()
    client.account = pro_account
    client.secret = token_for(pro_account)
    client.credentials(HTTP_X_BUILD_TOKEN=client.secret)
    return client


@pytest.fixture
def run_id():
    return uuid.uuid4()


@pytest.fixture
def staff_client(staff):
    client = APIClient()
    client.force_login(staff)
    return client


@pytest.fixture
def q_sync(monkeypatch):
    """django-q2 tasks run in the calling process, as a worker would run them."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


def now():
    return timezone.now()
