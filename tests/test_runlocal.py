"""`make run`'s command end to end: one process tree up on the embedded default, then Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.conf import settings

from tests.support.net import free_port

pytestmark = pytest.mark.integration


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for(url, deadline):
    while time.monotonic() < deadline:
        try:
            status, body = get(url)
            if status == 200:
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 in time")


def descendants(pid) -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat_file:
                    stat = stat_file.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.add(int(entry))
    for child in list(children):
        children |= descendants(child)
    return children


def test_runlocal_serves_admin_and_api_then_stops_everything_on_ctrl_c(tmp_path):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "BUILDHUB_ENV"}
    }
    env.update(BUILDHUB_VAR_DIR=str(tmp_path), BUILDHUB_PORT=str(port), BUILDHUB_WORKERS="1")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runlocal"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = json.loads(wait_for(f"{base}/healthz", time.monotonic() + 120))
        assert health["status"] == "ok"
        assert (tmp_path / "run" / "redis.sock").exists()
        assert (tmp_path / "buildhub.sqlite3").exists()

        status, page = get(f"{base}/admin/login/")
        assert status == 200
        assert b'name="password"' in page
        status, _ = get(f"{base}/static/admin/css/base.css")
        assert status == 200

        tokens = json.loads((tmp_path / "demo-tokens.json").read_text())
        status, body = get(
            f"{base}/api/v1/accounts/", {"Authorization": f"Bearer {tokens['demo-free']}"}
        )
        assert status == 200
        assert json.loads(body)["results"][0]["limits"]["priority_class"] == "P3"

        children = descendants(process.pid)
        assert len(children) >= 3  # daphne, supervisor, its cluster (and the private Redis)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=90)

    assert process.returncode == 0, output
    admin = json.loads((tmp_path / "demo-admin.json").read_text())
    assert f"admin login: admin / {admin['password']}" in output
    assert f"BuildHub is running at {base}/" in output
    assert "Private Redis stopped." in output
    assert not (tmp_path / "run" / "redis.sock").exists()
    still_running = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
    assert still_running == []
