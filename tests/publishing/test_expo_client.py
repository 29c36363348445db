"""BuildHub's Expo Updates answers read by Expo's own libraries (@expo/multipart-body-parser
and structured-headers, from npm: tests/clients), as the expo-updates client reads them:
parts, part headers, the signature checked with the certificate the app embeds, and every
asset's hash checked against the bytes served."""

import base64
import json
import subprocess
from pathlib import Path

import pytest
from django.test import Client

from tests.support.expo import ask, parts_of, publish

# The real client library under Node (make clients): integration.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

CLIENT = Path(__file__).resolve().parents[1] / "clients" / "expo_client.js"


def read_as_the_client(response, tmp_path, certificate: str | None = None) -> dict:
    body = response.content
    if response["content-type"].startswith("multipart/"):
        manifest = json.loads(parts_of(response)["manifest"][1])
    else:
        manifest = json.loads(body)
    assets = {}
    for asset in [manifest["launchAsset"], *manifest["assets"]]:
        served = Client().get(asset["url"], HTTP_ACCEPT_ENCODING="identity")
        assets[asset["url"]] = base64.b64encode(served.content).decode()
    capture = tmp_path / "capture.json"
    capture.write_text(
        json.dumps(
            {
                "contentType": response["content-type"],
                "body": base64.b64encode(body).decode(),
                "headers": {name.lower(): value for name, value in response.items()},
                "certificate": certificate,
                "assets": assets,
            }
        )
    )
    result = subprocess.run(
        ["node", str(CLIENT), str(capture)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_expos_parser_reads_the_parts_and_the_asset_hash_matches(app, tmp_storage, tmp_path):
    publish(app, tmp_storage)

    read = read_as_the_client(ask(app, accept="multipart/mixed"), tmp_path)

    assert set(read["parts"]) == {"manifest", "extensions"}
    manifest_part = read["parts"]["manifest"]
    assert manifest_part["contentDisposition"] == "inline"
    assert manifest_part["contentType"].startswith("application/json")
    assert manifest_part["signature"] is None
    assert read["parts"]["extensions"]["body"] == {"assetRequestHeaders": {}}
    assert read["manifest"]["runtimeVersion"] == "1.0.0"
    assert list(read["assets"].values()) == [True]


def test_expos_libraries_verify_the_signature_with_the_embedded_certificate(
    pro_account, api_client_for, app, tmp_storage, tmp_path
):
    client = api_client_for(pro_account)
    client.post(f"/api/v1/apps/{app.slug}/code-signing/", {"key_id": "root"}, format="json")
    certificate = client.get(f"/api/v1/apps/{app.slug}/code-signing/certificate.pem/")
    publish(app, tmp_storage)
    expect = 'sig, keyid="root", alg="rsa-v1_5-sha256"'

    multipart = read_as_the_client(
        ask(app, accept="multipart/mixed", expo_expect_signature=expect),
        tmp_path,
        certificate.content.decode(),
    )
    json_only = read_as_the_client(
        ask(app, accept="application/expo+json", expo_expect_signature=expect),
        tmp_path,
        certificate.content.decode(),
    )

    for read in (multipart, json_only):
        assert read["parts"]["manifest"]["signature"] == {
            "keyid": "root",
            "alg": "rsa-v1_5-sha256",
            "valid": True,
        }
        assert list(read["assets"].values()) == [True]
