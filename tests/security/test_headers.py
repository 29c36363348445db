"""Security headers on the admin, the API and the docs, and the production deploy check."""

import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db


def admin_pages() -> list[str]:
    """The admin index, every registered model's list and add pages, and our own views."""
    from django.contrib import admin
    from django.urls import reverse

    pages = ["/admin/", reverse("admin:buildevents_buildrun_trends")]
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        pages.append(reverse("admin:{}_{}_changelist".format(*info)))
        pages.append(reverse("admin:{}_{}_add".format(*info)))
    return pages


def csp_directives(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in policy.split(";") if part.strip()
    )


class InlineCode(HTMLParser):
    """Collects what a policy without 'unsafe-inline' would block: inline scripts (data blocks
    such as json_script are not code), event handler attributes, style attributes and blocks.
    """

    def __init__(self):
        super().__init__()
        self.found = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name.startswith("on") or name == "style":
                self.found.append(f"<{tag} {name}={value!r}>")
            if name in {"href", "src", "action"} and (value or "").startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")
        if tag == "style":
            self.found.append("<style> block")
        self._in_script = tag == "script" and not attrs.get("src")
        if self._in_script and attrs.get("type", "") == "application/json":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append(f"inline <script>: {data.strip()[:60]!r}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def test_admin_pages_carry_a_self_only_csp_and_frame_denial(staff_client):
    pages = [(Client(), "/admin/login/")] + [(staff_client, url) for url in admin_pages()]
    for who, url in pages:
        response = who.get(url)
        if response.status_code == 403:  # an add page of a model nobody adds by hand
            continue
        assert response.status_code == 200, url
        directives = csp_directives(response)
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"
        assert "unsafe-inline" not in response["Content-Security-Policy"]
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"


def test_admin_pages_need_no_inline_code(staff_client, pro_account):
    """Everything the admin runs comes from static files, so the policy breaks nothing."""
    from builds.models import Job

    job = Job.objects.create(
        kind="diagnostic.sleep", account=pro_account, priority_class="P1", timeout_seconds=60
    )
    pages = [(Client(), "/admin/login/")] + [
        (staff_client, url) for url in [*admin_pages(), f"/admin/builds/job/{job.pk}/change/"]
    ]
    for who, url in pages:
        response = who.get(url)
        if response.status_code == 403:  # an add page of a model nobody adds by hand
            continue
        assert response.status_code == 200, url
        parser = InlineCode()
        parser.feed(response.content.decode())
        assert parser.found == [], (url, parser.found)


def test_own_templates_and_scripts_hold_no_inline_code():
    templates = list((settings.BASE_DIR / "templates").rglob("*.html"))
    assert templates
    for path in templates:
        parser = InlineCode()
        parser.feed(path.read_text())
        assert parser.found == [], (path, parser.found)
    for path in (settings.BASE_DIR / "static" / "buildhub").glob("*.js"):
        source = path.read_text()
        # Code built from strings is what 'unsafe-eval' would be needed for.
        assert not re.search(r"\beval\(|new Function\(|setTimeout\(\s*['\"]", source), path


def test_api_answers_are_not_sniffed_or_framed(api_client_for, pro_account):
    response = api_client_for(pro_account).get("/api/v1/accounts/")

    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_api_docs_load_their_script_from_this_origin(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert csp_directives(response)["script-src"] == "'self'"
    parser = InlineCode()
    parser.feed(response.content.decode())
    assert parser.found == []


PRODUCTION_ENV = {
    "BUILDHUB_ENV": "production",
    "SECRET_KEY": "p" * 20 + "roduction-secret-key-with-enough-variety-0123456789",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "ALLOWED_HOSTS": "buildhub.example.com",
}


def run_production(code: str) -> str:
    env = {**os.environ, **PRODUCTION_ENV, "DJANGO_SETTINGS_MODULE": "buildhub.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_production_settings_pass_the_deploy_check():
    run_production(
        "import django; django.setup(); from django.core.management import call_command; "
        "call_command('check', deploy=True, fail_level='WARNING')"
    )


def test_production_sends_hsts_and_redirects_to_https():
    out = run_production(
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client(SERVER_NAME='buildhub.example.com')\n"
        "plain = c.get('/api/schema/')\n"
        "tls = c.get('/api/schema/', secure=True)\n"
        "print(plain.status_code, plain['Location'])\n"
        "print(tls.status_code, tls['Strict-Transport-Security'])\n"
        "print('Content-Security-Policy:', tls['Content-Security-Policy'])\n"
    )
    redirect, hsts, csp = out.strip().splitlines()[-3:]
    assert redirect == "301 https://buildhub.example.com/api/schema/"
    assert hsts == "200 max-age=31536000; includeSubDomains; preload"
    assert csp == "Content-Security-Policy: frame-ancestors 'none'"
