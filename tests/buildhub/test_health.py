import pytest
from django.test import Client

from builds.engine.workers import register_worker

pytestmark = pytest.mark.django_db


def test_healthz_reports_each_service_up():
    response = Client().get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["down"] == []
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "redis": "ok",
        "storage": "ok",
        "sandbox": "ok",
    }
    assert body["sandbox"] == {"setting": "bwrap", "workers": {}}


def test_healthz_shows_how_live_workers_sandbox_and_which_cannot(settings):
    register_worker("node-a:1:1", "node-a", 1, 2, "bwrap")
    register_worker("node-b:2:1", "node-b", 2, 2, "broken: bubblewrap (bwrap) is not installed")

    body = Client().get("/healthz").json()

    assert body["sandbox"]["workers"] == {
        "bwrap": 1,
        "broken: bubblewrap (bwrap) is not installed": 1,
    }
    assert body["status"] == "degraded" and body["down"] == ["sandbox"]
    assert "bubblewrap (bwrap) is not installed" in body["checks"]["sandbox"]["error"]


def test_healthz_is_degraded_naming_redis_when_it_is_unreachable(settings, tmp_path, caplog):
    settings.REDIS_URL = f"unix://{tmp_path}/nothing-listens-here.sock"

    response = Client().get("/healthz")

    # Still 200: submissions are accepted into the database and dispatched once Redis is back.
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["down"] == ["redis"]
    assert "degraded" in caplog.text
    assert body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["status"] == "ok"


def test_healthz_is_503_naming_storage_when_it_is_not_writable(settings, tmp_path):
    blocker = tmp_path / "a-file-not-a-directory"
    blocker.write_text("")
    settings.STORAGES = {
        **settings.STORAGES,
        "private": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": blocker / "private"},
        },
    }

    response = Client().get("/healthz")

    assert response.status_code == 503
    assert response.json()["status"] == "down"
    assert response.json()["down"] == ["storage"]


def test_submissions_are_accepted_while_the_broker_is_down(
    pro_account, caplog, monkeypatch, django_capture_on_commit_callbacks
):
    from django_q.conf import Conf

    from builds.choices import JobStatus
    from builds.engine.submit import submit_job

    monkeypatch.setattr(Conf, "REDIS", "redis://127.0.0.1:1/0")

    with django_capture_on_commit_callbacks(execute=True):
        job, created = submit_job(pro_account, "diagnostic.sleep", {"seconds": 1}, staff=True)

    assert created
    assert job.status == JobStatus.QUEUED
    assert "could not send a dispatch ticket" in caplog.text
