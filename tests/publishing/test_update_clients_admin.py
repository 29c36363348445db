"""The admin's pages for the update clients: deployment keys (rotatable), code signing
certificates (never the private key) and client reports."""

import pytest

from publishing import codepush, signing
from publishing.models import Deployment

pytestmark = pytest.mark.django_db


def test_deployment_keys_are_listed_and_rotated_from_the_admin(admin_client, app):
    deployments = codepush.deployments_of(app)
    old_keys = {d.key for d in deployments}

    page = admin_client.get("/admin/publishing/deployment/").content.decode()
    rotated = admin_client.post(
        "/admin/publishing/deployment/",
        {"action": "rotate_keys", "_selected_action": [d.pk for d in deployments]},
        follow=True,
    )

    assert all(key in page for key in old_keys)
    assert "Rotated 6 deployment key(s)." in rotated.content.decode()
    assert not old_keys & set(Deployment.objects.values_list("key", flat=True))


def test_the_signing_key_page_shows_the_certificate_never_the_private_key(admin_client, app):
    row = signing.generate_key(app)

    page = admin_client.get(f"/admin/publishing/appsigningkey/{row.pk}/change/").content.decode()

    assert "BEGIN CERTIFICATE" in page
    assert "PRIVATE KEY" not in page and "private_key" not in page
    assert admin_client.get("/admin/publishing/updatereport/").status_code == 200
