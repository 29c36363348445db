"""The real CodePush acquisition SDK (npm ``code-push`` 4.2.3, tests/clients) against a live
BuildHub: update, no update, mandatory, rollout and a binary outside the release's range,
then the download and deploy reports it sends."""

import json
import subprocess

import pytest

from publishing.models import UpdateReport
from tests.support.codepush import BUNDLE, BUNDLE_2, CLIENT, key_of, publish

pytestmark = pytest.mark.django_db(transaction=True)


def sdk(live_server, key, app_version="1.0.0", current=None, client="device-1", report=False):
    config = {
        "serverUrl": live_server.url,
        "deploymentKey": key,
        "appVersion": app_version,
        "clientUniqueId": client,
        "current": current,
        "report": report,
    }
    result = subprocess.run(
        ["node", str(CLIENT), json.dumps(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_sdk_gets_an_update_downloads_it_and_reports(live_server, app, tmp_storage):
    publish(app, tmp_storage, target_binary_range="1.x")

    got = sdk(live_server, key_of(app), "1.2.0", report=True)

    remote = got["remotePackage"]
    assert remote["label"] == "v1" and remote["appVersion"] == "1.x"
    assert remote["isMandatory"] is False and remote["deploymentKey"] == key_of(app)
    assert remote["downloadUrl"].startswith(live_server.url)
    assert got["packageBytes"] == remote["packageSize"] > len(b"PK")
    assert got["reports"] == ["download", "deploy"]
    assert sorted(UpdateReport.objects.values_list("kind", "status", "label")) == [
        ("deploy", "DeploymentSucceeded", "v1"),
        ("download", "", "v1"),
    ]

    # Installed: the next check, with the package it runs, finds nothing new.
    current = {"appVersion": "1.2.0", "packageHash": remote["packageHash"], "label": "v1"}
    assert sdk(live_server, key_of(app), "1.2.0", current=current)["remotePackage"] is None


def test_the_sdk_sees_mandatory_releases_and_binary_ranges(live_server, app, tmp_storage):
    publish(app, tmp_storage, BUNDLE, mandatory=True, target_binary_range="^2.0.0")
    publish(app, tmp_storage, BUNDLE_2, target_binary_range="^2.0.0")

    binary = sdk(live_server, key_of(app), "2.1.0")["remotePackage"]
    outside = sdk(live_server, key_of(app), "3.0.0")["remotePackage"]
    too_old = sdk(live_server, key_of(app), "1.0.0")["remotePackage"]

    assert binary["label"] == "v2" and binary["isMandatory"] is True  # v1 was mandatory
    assert outside is None
    assert too_old == {"updateAppVersion": True, "appVersion": "^2.0.0"}


def test_the_sdk_respects_the_rollout_per_client(live_server, app, tmp_storage):
    publish(app, tmp_storage, BUNDLE, rollout_percent=50)

    offered = {
        client
        for client in (f"install-{n}" for n in range(24))
        if sdk(live_server, key_of(app), client=client)["remotePackage"] is not None
    }
    again = {
        client
        for client in sorted(offered)[:5]
        if sdk(live_server, key_of(app), client=client)["remotePackage"] is not None
    }

    assert 0 < len(offered) < 24
    assert again == set(sorted(offered)[:5])
