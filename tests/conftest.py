import uuid

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from buildhub.embedded_redis import EmbeddedRedis
from builds.choices import Tier, TokenScope
from builds.services import create_api_token
from tests.support.accounts import make_account
from tests.support.live import LIVE_FIXTURES, worker_processes  # noqa: F401 - a fixture
from tests.support.publishing import tmp_storage  # noqa: F401 - a fixture
from tests.support.s3 import s3_server, s3_storage, s3_storage_for_run  # noqa: F401 - fixtures

TIERS = ("unit", "integration", "e2e")
DATABASE_FIXTURES = frozenset(
    {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback"}
)


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """The embedded default's private Redis, started for the run when no REDIS_URL is given."""
    if not settings.USES_EMBEDDED_REDIS:
        yield settings.REDIS_URL
        return
    server = EmbeddedRedis(settings.EMBEDDED_REDIS_SOCKET)
    started = not server.is_up()
    if started:
        server.start()
    yield server.url
    if started:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def checkins_written_by_flush():
    """Device check-ins are written when a test calls publishing.checkins.flush(), never by a
    background thread that would race the test's own use of the database."""
    settings.CHECKIN_FLUSH_SECONDS = 0


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Close connections after each request in tests.

    Requests served through ASGI run their queries in worker threads; with persistent
    connections those would stay open and keep the test database from being dropped.
    """
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True)
def workers_registered_per_test():
    """A process registers its worker row once; each test starts with a database of its own."""
    yield
    from builds.engine import runner

    runner._registered.clear()


@pytest.fixture(autouse=True)
def channel_layer_per_test_loop():
    """Each async test runs on its own event loop, while the process keeps one channel layer.
    A consumer cancelled mid-receive can leave the layer's receive lock held and bound to the
    finished test's loop; the next test then could not receive. Start each test unbound."""
    yield
    from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

    layer = channel_layers.backends.get(DEFAULT_CHANNEL_LAYER)
    if layer is not None and hasattr(layer, "receive_lock"):
        layer.receive_lock = None
        layer.receive_event_loop = None


async def _end_leftover_tasks():
    """A consumer a test left running (a refused connect, say) is cancelled while the test's
    loop still runs, and the channel layer's connections are closed: a task cancelled in the
    middle of a Redis read can otherwise go on polling the layer, and the loop's own close
    would then wait for it forever."""
    import asyncio

    from channels.layers import get_channel_layer

    current = asyncio.current_task()
    leftover = [task for task in asyncio.all_tasks() if task is not current]
    for task in leftover:
        task.cancel()
    if leftover:
        await asyncio.wait(leftover, timeout=1)
    layer = get_channel_layer()
    if hasattr(layer, "close_pools"):
        await layer.close_pools()
    if leftover:
        await asyncio.wait(leftover, timeout=10)
    for task in leftover:
        if task.done() and not task.cancelled():
            task.exception()  # the closed connection's error, expected here


@pytest.fixture
async def leftover_tasks_ended():
    yield
    await _end_leftover_tasks()


def tier(item) -> str:
    """A test's tier: its own marker, else ``e2e`` in a browser; ``integration`` on the test
    database, with live processes or servers (the fixtures in LIVE_FIXTURES) or the real tool
    chain; else ``unit``: pure logic, what `make test-fast` runs."""
    for name in TIERS:
        if item.get_closest_marker(name) is not None:
            return name
    fixtures = set(item.fixturenames)
    if "browser" in fixtures:
        return "e2e"
    if (
        fixtures & (LIVE_FIXTURES | DATABASE_FIXTURES)
        or item.get_closest_marker("django_db")
        or item.get_closest_marker("toolchain")
    ):
        return "integration"
    return "unit"


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("asyncio") is not None:
            item.fixturenames.append("leftover_tasks_ended")
        item.add_marker(tier(item))


@pytest.fixture(autouse=True)
def rate_budgets_per_test(settings):
    """API rate budgets are counted in the shared Redis by account id, and a rolled-back test
    gives its ids to the next (SQLite): each test counts under a prefix of its own, so one
    test's submissions never spend another's budget."""
    settings.RATELIMIT_CACHE_PREFIX = f"rl:{uuid.uuid4().hex}:"


@pytest.fixture
def clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def free_account(db):
    return make_account(Tier.FREE)


@pytest.fixture
def starter_account(db):
    return make_account(Tier.STARTER)


@pytest.fixture
def pro_account(db):
    return make_account(Tier.PRO)


@pytest.fixture
def enterprise_account(db):
    return make_account(Tier.ENTERPRISE)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "operator", "operator@example.com", "operator-pass-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def api_client_for(db):
    """``api_client_for(account, scopes=[...])``: an APIClient holding a fresh token."""

    def build(account, scopes=None, **token_options):
        issued = create_api_token(
            account,
            name="test",
            scopes=list(scopes) if scopes is not None else TokenScope.values,
            **token_options,
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
        client.token = issued.token
        client.secret = issued.secret
        return client

    return build
