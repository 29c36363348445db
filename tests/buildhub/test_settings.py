import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from buildhub.env import database_from_url, env_bool, env_int, env_list
from tests.support.live import run_django

# Settings are read as a fresh process reads them: most tests start one.
pytestmark = pytest.mark.integration

PRODUCTION_ENV = {
    "BUILDHUB_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "DATABASE_URL": "postgres://buildhub:pw@db.internal:5432/buildhub",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "ALLOWED_HOSTS": "buildhub.example.com",
}


def test_env_helpers(monkeypatch):
    monkeypatch.setenv("N", "12")
    monkeypatch.setenv("FLAG", "yes")
    monkeypatch.setenv("HOSTS", "a.example, b.example,")
    assert env_int("N", 1) == 12
    assert env_int("MISSING", 7) == 7
    assert env_bool("FLAG") is True
    assert env_bool("MISSING", True) is True
    assert env_list("HOSTS") == ["a.example", "b.example"]
    monkeypatch.setenv("N", "twelve")
    with pytest.raises(ImproperlyConfigured, match="N must be an integer"):
        env_int("N", 1)
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="FLAG must be a boolean"):
        env_bool("FLAG")


def test_database_url_gives_persistent_psycopg_connections():
    db = database_from_url("postgres://bob:p%40ss@db:5433/builds?sslmode=require", conn_max_age=60)

    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "builds",
        "bob",
        "p@ss",
        "db",
        "5433",
    )
    assert db["CONN_MAX_AGE"] == 60
    assert db["CONN_HEALTH_CHECKS"] is True
    assert db["OPTIONS"] == {"sslmode": "require"}
    typed = database_from_url(
        "postgres://db/x?prepare_threshold=5&sslmode=disable&x=TRUE", conn_max_age=0
    )
    assert typed["OPTIONS"] == {"prepare_threshold": 5, "sslmode": "disable", "x": True}
    with pytest.raises(ImproperlyConfigured, match="postgres://"):
        database_from_url("mysql://db/x", conn_max_age=0)
    with pytest.raises(ImproperlyConfigured, match="name a database"):
        database_from_url("postgres://db", conn_max_age=0)


def test_embedded_default_needs_no_services(tmp_path):
    result = run_django(
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE']); print(s.REDIS_URL); "
        "print(s.STORAGES['default']['BACKEND']); "
        "print(s.STORAGES['private']['OPTIONS']['location']); "
        "print(s.DATABASES['default']['OPTIONS']['init_command'])",
        {},
        tmp_path,
    )

    assert result.returncode == 0, result.stderr
    engine, redis_url, storage, private, init = result.stdout.splitlines()
    assert engine == "django.db.backends.sqlite3"
    assert redis_url == f"unix://{tmp_path}/run/redis.sock"
    assert storage == "django.core.files.storage.FileSystemStorage"
    assert private == str(tmp_path / "storage" / "private")
    assert "journal_mode=WAL" in init
    key_file = tmp_path / "secret_key"
    assert len(key_file.read_text()) >= 50
    assert oct(key_file.stat().st_mode)[-3:] == "600"


def test_the_local_secret_key_is_generated_once(tmp_path):
    code = "from django.conf import settings as s; print(s.SECRET_KEY)"
    first = run_django(code, {}, tmp_path).stdout
    second = run_django(code, {}, tmp_path).stdout
    assert first == second
    assert len(first.strip()) >= 50


def test_s3_storage_when_buckets_are_set(tmp_path):
    env = {"AWS_STORAGE_BUCKET_NAME": "pub", "AWS_PRIVATE_STORAGE_BUCKET_NAME": "priv"}
    result = run_django(
        "from django.core.files.storage import storages; "
        "print(type(storages['default']).__name__, storages['default'].bucket_name, "
        "storages['default'].querystring_auth); "
        "print(type(storages['private']).__name__, storages['private'].bucket_name, "
        "storages['private'].querystring_auth, storages['private'].default_acl)",
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["S3Storage pub False", "S3Storage priv True private"]


def test_s3_public_bucket_without_a_private_one_is_refused(tmp_path):
    result = run_django("pass", {"AWS_STORAGE_BUCKET_NAME": "pub"}, tmp_path)
    assert result.returncode != 0
    assert "AWS_PRIVATE_STORAGE_BUCKET_NAME" in result.stderr


POOLED_DATABASE = "postgres://buildhub@pgbouncer.internal:6432/buildhub"
SHOW_POOLER_SETTINGS = (
    "from django.conf import settings as s; "
    "print(s.DATABASES['default'].get('DISABLE_SERVER_SIDE_CURSORS', False), "
    "s.JOB_PREPARED_STATEMENTS)"
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "False True"),
        ({"DATABASE_POOLER": "session"}, "False True"),
        # Behind PgBouncer in transaction mode: nothing may outlive a transaction.
        ({"DATABASE_POOLER": "transaction"}, "True False"),
        # PgBouncer 1.21+ with max_prepared_statements keeps them: the operator says so.
        ({"DATABASE_POOLER": "transaction", "JOB_PREPARED_STATEMENTS": "true"}, "True True"),
    ],
)
def test_a_transaction_pooler_turns_off_what_outlives_a_transaction(tmp_path, env, expected):
    result = run_django(SHOW_POOLER_SETTINGS, {"DATABASE_URL": POOLED_DATABASE, **env}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_an_unknown_pooler_mode_is_refused(tmp_path):
    result = run_django("pass", {"DATABASE_POOLER": "statement"}, tmp_path)
    assert result.returncode != 0
    assert "DATABASE_POOLER must be transaction, session or empty" in result.stderr


@pytest.mark.parametrize("missing", ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"])
def test_production_requires_real_configuration(tmp_path, missing):
    env = {**PRODUCTION_ENV, missing: ""}
    result = run_django("pass", env, tmp_path)
    assert result.returncode != 0
    assert f"Production needs {missing}" in result.stderr


def test_production_rejects_a_weak_secret_key(tmp_path):
    result = run_django("pass", {**PRODUCTION_ENV, "SECRET_KEY": "short"}, tmp_path)
    assert "Production needs SECRET_KEY" in result.stderr


def test_production_passes_check_deploy_without_warnings(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env={**clean, "BUILDHUB_VAR_DIR": str(tmp_path), **PRODUCTION_ENV},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    assert not (tmp_path / "secret_key").exists()


def test_daphne_is_the_first_app():
    assert settings.INSTALLED_APPS[0] == "daphne"
    for app in ("builds", "publishing", "buildevents", "abuse", "django_q", "channels"):
        assert app in settings.INSTALLED_APPS
