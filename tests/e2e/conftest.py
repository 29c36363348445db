"""Browser tests: Debian's Chromium driven by Playwright against a live BuildHub.

The stack is real: daphne serving the ASGI app (HTTP and websockets) and the worker
supervisor, as subprocesses on loopback, on the test database and the test Redis
(tests/support/live.py). The browser is Debian's /usr/bin/chromium, which `make browser`
installs (`make test` runs it); Playwright never downloads one.
"""

import time
from pathlib import Path

import pytest
from django.core.management.base import CommandError
from django.db import OperationalError
from django.test import TransactionTestCase

from tests.support.browser import STAFF_PASSWORD, VIEWPORTS
from tests.support.live import running_stack

CHROMIUM = Path("/usr/bin/chromium")


def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing ({CHROMIUM}): `make browser` installs Debian's chromium "
            "package (as root), or run `sudo apt-get install chromium`"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module.

    Playwright's sync API keeps an event loop running in this thread while it is open, so
    it is closed before other modules' async tests run. Meanwhile the tests' own ORM calls
    (arranging data, checking pages against the database) are plain synchronous calls that
    Django would refuse beside that loop: allowed for this module only, and never passed on
    to the live stack's processes.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=str(executable),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module", autouse=True)
def flush_retried_on_deadlock():
    """Between tests the database is emptied with TRUNCATE while the live stack keeps reading
    it; on PostgreSQL the two can deadlock, and the server then aborts one of them. When the
    emptying is the one aborted, it is simply run again."""
    original = TransactionTestCase._fixture_teardown

    def teardown(self):
        for attempt in range(5):
            try:
                return original(self)
            except (OperationalError, CommandError) as error:
                if "deadlock" not in str(error) + str(error.__cause__) or attempt == 4:
                    raise
                time.sleep(0.5)
        return None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TransactionTestCase, "_fixture_teardown", teardown)
        yield


@pytest.fixture(scope="module")
def live_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """One stack per module: the browser tests only read what the tests arrange."""
    with running_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.fixture
def operator(transactional_db, django_user_model):
    return django_user_model.objects.create_user(
        "operator", "operator@example.com", STAFF_PASSWORD, is_staff=True, is_superuser=True
    )


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request):
    return request.param


@pytest.fixture
def page(browser, live_stack, viewport):
    context = browser.new_context(viewport=VIEWPORTS[viewport], base_url=live_stack.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()
