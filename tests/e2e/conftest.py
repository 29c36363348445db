"""Browser tests: Debian's Chromium driven by Playwright against a live BuildHub.

The stack is real: daphne serving the ASGI app (HTTP and websockets) and the worker
supervisor, as subprocesses on loopback, on the test database and the test Redis. The
browser is /usr/bin/chromium, installed here from Debian's packages when it is missing;
Playwright never downloads one.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from tests.builds.test_workers_live import FAST_ENGINE, database_env
from tests.test_runlocal import free_port

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = settings.VAR_DIR / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
STAFF_PASSWORD = "operator-pass-123"


def ensure_chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail(
            "Chromium is missing: install Debian's chromium package (apt-get install chromium)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env)
    subprocess.run([apt, "install", "-y", "-qq", "chromium"], check=True, env=env)
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

    executable = ensure_chromium()
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=str(executable),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in (200, 503):
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in time")


class Stack:
    """daphne + the worker supervisor on the test database, as `make run` starts them."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
        self.env = {
            **inherited,
            **FAST_ENGINE,
            **database_env(),
            "DIAGNOSTIC_MARKER_DIR": str(tmp / "markers"),
            # A lease long enough that a loaded machine does not make live workers look lost.
            "JOB_LEASE_SECONDS": "15",
            "JOB_HEARTBEAT_SECONDS": "3",
            "DASHBOARD_REFRESH_SECONDS": "1",
            "WORKER_IDLE_SECONDS": "5",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
        self.logs = tmp
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str, *command: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            list(command),
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log = log
        self.processes.append(process)
        return process

    def up(self) -> "Stack":
        web = self.start(
            "daphne",
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "buildhub.asgi:application",
        )
        self.start("supervisor", sys.executable, "manage.py", "runworkers", "--clusters", "1")
        wait_until_up(f"{self.url}/healthz", web)
        return self

    def down(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            process.log.close()


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("stack")).up()
    yield stack
    stack.down()


@pytest.fixture
def operator(transactional_db, django_user_model):
    return django_user_model.objects.create_user(
        "operator", "operator@example.com", STAFF_PASSWORD, is_staff=True, is_superuser=True
    )


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request):
    return request.param


@pytest.fixture
def page(browser, stack, viewport):
    context = browser.new_context(viewport=VIEWPORTS[viewport], base_url=stack.url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def log_in(page, username="operator", password=STAFF_PASSWORD) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")


def screenshot(page, name: str, viewport: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{viewport}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
