"""What npm may fetch from: lock files and .npmrc files are checked before npm starts."""

import json

import pytest

from builds.choices import JobStatus
from builds.engine.exceptions import JobFailed
from builds.engine.runner import run_next_job
from builds.models import Job
from publishing import hosts, registries
from publishing.secrets import set_secret
from tests.publishing.ota_helpers import copy_fixture, make_app, request_ota, upload_source

PUBLIC = "https://registry.example.com"


@pytest.fixture
def public_dns(monkeypatch):
    """registry.example.com is public; any other name resolves to what the test says."""
    answers = {"registry.example.com": ["93.184.215.14"]}

    def resolve(host):
        return answers.get(host, ["93.184.215.15"])

    monkeypatch.setattr(hosts, "resolve_host", resolve)
    return answers


def lock_with(*resolved: str) -> dict:
    packages = {"": {"name": "app", "version": "1.0.0"}}
    for index, url in enumerate(resolved):
        packages[f"node_modules/dep-{index}"] = {"version": "1.0.0", "resolved": url}
    return {"name": "app", "lockfileVersion": 3, "packages": packages}


def write_app(tmp_path, lock: dict, npmrc: str | None = None):
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "package-lock.json").write_text(json.dumps(lock))
    if npmrc is not None:
        (app_dir / ".npmrc").write_text(npmrc)
    return app_dir


def check(app_dir, secrets=None):
    return registries.check_sources(app_dir, secrets or {}, app_dir.parent / "user-npmrc")


# --- lock files --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1:6379/x.tgz", "127.0.0.1 is a local, private"),
        ("https://localhost/x.tgz", "localhost is a local, private"),
        ("https://10.1.2.3/x.tgz", "10.1.2.3 is a local, private"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a local, private"),
        ("https://[::1]:5432/x.tgz", "::1 is a local, private"),
        ("https://[::ffff:127.0.0.1]/x.tgz", "::ffff:127.0.0.1 is a local, private"),
        ("https://metadata.google.internal/x.tgz", "metadata.google.internal is a local"),
        ("http://registry.example.com/x.tgz", "only https registries are allowed"),
        ("ftp://registry.example.com/x.tgz", "ftp: URLs are not allowed"),
        ("git://github.com/a/b.git", "git: URLs are not allowed"),
    ],
)
def test_a_lock_file_url_to_a_forbidden_place_is_refused_naming_it(
    tmp_path, public_dns, url, reason
):
    app_dir = write_app(tmp_path, lock_with(f"{PUBLIC}/ok.tgz", url))

    with pytest.raises(JobFailed) as refused:
        check(app_dir)

    assert str(refused.value).startswith(
        f"The lock file's node_modules/dep-1 resolves to {url}, refused: "
    )
    assert reason in str(refused.value)


def test_a_name_that_resolves_to_a_private_address_is_refused(tmp_path, public_dns):
    public_dns["npm.corp.example"] = ["192.168.1.20"]
    app_dir = write_app(tmp_path, lock_with("https://npm.corp.example/a/-/a-1.0.0.tgz"))

    with pytest.raises(JobFailed, match="npm.corp.example is a local, private"):
        check(app_dir)


def test_public_https_local_paths_and_trusted_hosts_pass(tmp_path, public_dns, settings):
    settings.NPM_TRUSTED_REGISTRY_HOSTS = ["npm.mirror.internal"]
    app_dir = write_app(
        tmp_path,
        lock_with(
            f"{PUBLIC}/a/-/a-1.0.0.tgz",
            "https://npm.mirror.internal/b/-/b-1.0.0.tgz",  # the operator's own mirror
            "file:../shared",
            "packages/local",
        ),
    )

    assert check(app_dir) == ({}, [])


def test_http_registries_pass_only_where_a_setting_allows_them(tmp_path, public_dns, settings):
    app_dir = write_app(tmp_path, lock_with("http://registry.example.com/a.tgz"))
    settings.NPM_ALLOW_HTTP_REGISTRIES = True

    assert check(app_dir) == ({}, [])


def test_a_version_1_lock_file_is_walked_to_its_nested_dependencies(tmp_path, public_dns):
    lock = {
        "lockfileVersion": 1,
        "dependencies": {
            "a": {
                "version": "1.0.0",
                "resolved": f"{PUBLIC}/a.tgz",
                "dependencies": {"b": {"version": "1", "resolved": "https://10.0.0.9/b.tgz"}},
            }
        },
    }
    app_dir = write_app(tmp_path, lock)

    with pytest.raises(JobFailed, match="The lock file's a/b resolves to https://10.0.0.9/b.tgz"):
        check(app_dir)


def test_a_refusal_never_shows_credentials_in_the_url(tmp_path, public_dns):
    app_dir = write_app(tmp_path, lock_with("https://user:hunter2@127.0.0.1/x.tgz"))

    with pytest.raises(JobFailed) as refused:
        check(app_dir)

    assert "hunter2" not in str(refused.value)
    assert "https://127.0.0.1/x.tgz" in str(refused.value)


# --- .npmrc --------------------------------------------------------------------------------
def test_npmrc_registries_are_checked_and_everything_but_registries_is_dropped(
    tmp_path, public_dns
):
    npmrc = (
        f"registry={PUBLIC}/\n"
        "@acme:registry=https://registry.example.com/acme/\n"
        "//registry.example.com/:_authToken=${NPM_TOKEN}\n"
        "node-options=--require ./evil.js\n"
        "script-shell=/bin/evil\n"
        "ignore-scripts=false\n"
        "cache=/var/buildhub/shared\n"
        "proxy=http://127.0.0.1:9999\n"
        "# a comment\n"
    )
    app_dir = write_app(tmp_path, lock_with(), npmrc)

    secrets, ignored = check(
        app_dir, {"NPM_TOKEN": "npm_abc", "AWS_SECRET_ACCESS_KEY": "not-for-npm"}
    )

    assert secrets == {"NPM_TOKEN": "npm_abc"}  # only what the kept lines name
    assert set(ignored) == {"node-options", "script-shell", "ignore-scripts", "cache", "proxy"}
    assert (app_dir / ".npmrc").read_text().splitlines() == [
        f"registry={PUBLIC}/",
        "@acme:registry=https://registry.example.com/acme/",
        "//registry.example.com/:_authToken=${NPM_TOKEN}",
    ]


@pytest.mark.parametrize(
    "npmrc",
    [
        "registry=https://127.0.0.1:4873/\n",
        "@corp:registry=http://registry.example.com/\n",
        "registry=https://169.254.169.254/\n",
    ],
)
def test_an_npmrc_registry_to_a_forbidden_place_is_refused(tmp_path, public_dns, npmrc):
    app_dir = write_app(tmp_path, lock_with(), npmrc)

    with pytest.raises(JobFailed, match=r"^The app's .npmrc sets .*registry to .*, refused: "):
        check(app_dir)


def test_the_accounts_registry_secret_is_checked_and_becomes_the_default(tmp_path, public_dns):
    app_dir = write_app(tmp_path, lock_with())

    check(app_dir, {"NPM_REGISTRY": f"{PUBLIC}/"})
    assert (app_dir.parent / "user-npmrc").read_text() == f"registry={PUBLIC}/\n"

    with pytest.raises(JobFailed, match="The account's NPM_REGISTRY secret names https://10.0"):
        check(app_dir, {"NPM_REGISTRY": "https://10.0.0.1/"})


def test_a_symlinked_npmrc_is_refused(tmp_path, public_dns):
    app_dir = write_app(tmp_path, lock_with())
    (app_dir / ".npmrc").symlink_to("/etc/passwd")

    with pytest.raises(JobFailed, match="The app's .npmrc must be a plain file."):
        check(app_dir)


# --- through a real build ------------------------------------------------------------------
pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
@pytest.mark.parametrize(
    ("lock_url", "npmrc", "named"),
    [
        ("https://127.0.0.1:5432/metro/-/metro-0.83.8.tgz", None, "https://127.0.0.1:5432/"),
        (None, "registry=https://169.254.169.254/\n", "https://169.254.169.254/"),
        (None, "@acme:registry=https://10.20.30.40/\n", "https://10.20.30.40/"),
    ],
)
def test_a_build_whose_lock_file_or_npmrc_points_inside_fails_before_npm_runs(
    pro_account, tmp_storage, tmp_path, lock_url, npmrc, named
):
    source = copy_fixture(tmp_path)
    if lock_url:
        lock_path = source / "package-lock.json"
        lock = json.loads(lock_path.read_text())
        lock["packages"]["node_modules/metro"]["resolved"] = lock_url
        lock_path.write_text(json.dumps(lock))
    if npmrc:
        (source / ".npmrc").write_text(npmrc)
    app = make_app(pro_account)
    set_secret(pro_account, "NPM_TOKEN", "npm_secret_value")
    job = request_ota(app, upload_source(app, source))

    assert run_next_job() == str(job.pk)

    job = Job.objects.get(pk=job.pk)
    log = "\n".join(job.logs.values_list("message", flat=True))
    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert named in job.error and "refused" in job.error
    assert "npm ci --ignore-scripts" not in log  # npm never started
