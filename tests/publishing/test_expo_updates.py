"""The Expo Updates protocol v1, checked against the specification (technical-specs/
expo-updates-1): request headers, negotiation, the multipart body, the manifest, asset
hashes of the bytes served, code signing verified with the downloaded certificate, 204s,
rollback and immutable assets. tests/publishing/test_expo_client.py parses the same answers
with Expo's own client libraries."""

import base64
import gzip
import hashlib
import json
import uuid

import brotli
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.test import Client

from publishing import releases, signing
from publishing.models import AppSigningKey
from tests.support.api import assert_error
from tests.support.expo import BUNDLE, BUNDLE_2, ask, parts_of, publish

pytestmark = pytest.mark.django_db(transaction=True)


def b64url_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def assert_common_headers(response):
    assert response["expo-protocol-version"] == "1"
    assert response["expo-sfv-version"] == "0"
    assert "expo-manifest-filters" in response
    assert "expo-server-defined-headers" in response
    assert response["cache-control"] == "private, max-age=0"


# --- requests -------------------------------------------------------------------------------
def test_a_missing_or_bad_platform_or_runtime_version_is_a_400_naming_the_header(app):
    for headers, field in (
        ({"platform": "windows"}, "expo-platform"),
        ({"platform": ""}, "expo-platform"),
        ({"runtime": ""}, "expo-runtime-version"),
        ({"runtime": "has spaces in it"}, "expo-runtime-version"),
    ):
        error = assert_error(ask(app, **headers), 400, "invalid")
        assert field in error["fields"], headers


def test_an_accept_header_nothing_can_serve_is_406_and_an_unknown_app_404(app):
    assert ask(app, accept="text/html").status_code == 406
    assert ask(app, accept="application/xml, text/*;q=0.5").status_code == 406
    assert (
        Client()
        .get(
            "/api/v1/expo/app_nope/manifest",
            HTTP_EXPO_PLATFORM="ios",
            HTTP_EXPO_RUNTIME_VERSION="1",
        )
        .status_code
        == 404
    )


def test_no_release_is_a_204_that_still_carries_the_protocol_headers(app):
    response = ask(app)

    assert response.status_code == 204 and response.content == b""
    assert_common_headers(response)


# --- the update -----------------------------------------------------------------------------
def test_a_multipart_answer_holds_the_manifest_and_extensions_as_the_spec_says(app, tmp_storage):
    publish(app, tmp_storage)

    response = ask(app, accept="multipart/mixed", eas_client_id=str(uuid.uuid4()))

    assert response.status_code == 200
    assert response["content-type"].startswith("multipart/mixed; boundary=")
    assert_common_headers(response)
    parts = parts_of(response)
    assert set(parts) == {"manifest", "extensions"}
    manifest_headers, manifest_body = parts["manifest"]
    assert manifest_headers["content-disposition"] == 'inline; name="manifest"'
    assert manifest_headers["content-type"].startswith("application/json")
    assert "expo-signature" not in manifest_headers  # the client did not ask for one
    extensions_headers, extensions_body = parts["extensions"]
    assert extensions_headers["content-type"].startswith("application/json")
    assert json.loads(extensions_body) == {"assetRequestHeaders": {}}

    manifest = json.loads(manifest_body)
    assert uuid.UUID(manifest["id"])
    assert manifest["runtimeVersion"] == "1.0.0"
    assert manifest["createdAt"].endswith("Z")
    assert manifest["assets"] == [] and manifest["metadata"] == {}
    assert manifest["extra"]["buildhub"]["version"] == 1
    launch = manifest["launchAsset"]
    assert launch["contentType"] == "application/javascript"
    assert "fileExtension" not in launch  # ignored for the launch asset: omitted
    asset = Client().get(launch["url"])
    assert asset.status_code == 200
    assert asset.content == BUNDLE
    assert launch["hash"] == b64url_sha256(asset.content)
    assert "=" not in launch["hash"]


def test_json_answers_are_the_manifest_alone_when_that_is_all_the_client_takes(app, tmp_storage):
    publish(app, tmp_storage)

    expo_json = ask(app, accept="application/expo+json")
    plain_json = ask(app, accept="application/json")
    preferred = ask(app)  # expo+json;q=0.9, json;q=0.8, multipart (q=1): multipart wins

    assert expo_json["content-type"].startswith("application/expo+json")
    assert plain_json["content-type"].startswith("application/json")
    assert preferred["content-type"].startswith("multipart/mixed")
    assert json.loads(expo_json.content) == json.loads(plain_json.content)
    assert json.loads(expo_json.content) == json.loads(parts_of(preferred)["manifest"][1])
    assert_common_headers(expo_json)


def test_the_manifest_id_is_stable_and_the_current_update_gets_a_204(app, tmp_storage):
    publish(app, tmp_storage)

    first = json.loads(ask(app, accept="application/json").content)
    again = json.loads(ask(app, accept="application/json").content)
    current = ask(app, accept="application/json", expo_current_update_id=first["id"])

    assert first["id"] == again["id"]
    assert current.status_code == 204 and current["expo-protocol-version"] == "1"


def test_other_runtime_versions_platforms_and_channels_get_no_update(app, tmp_storage):
    publish(app, tmp_storage)

    assert ask(app, runtime="2.0.0").status_code == 204
    assert ask(app, platform="ios").status_code == 204  # only android was published
    assert ask(app, channel="staging").status_code == 204
    assert ask(app, channel="no-such-channel").status_code == 204
    assert ask(app, channel=None).status_code == 200  # no channel: production


def test_assets_are_immutable_and_compressed_as_the_client_accepts(app, tmp_storage):
    publish(app, tmp_storage)
    url = json.loads(ask(app, accept="application/json").content)["launchAsset"]["url"]

    plain = Client().get(url)
    zipped = Client().get(url, HTTP_ACCEPT_ENCODING="gzip")
    brotlied = Client().get(url, HTTP_ACCEPT_ENCODING="br, gzip")

    for response in (plain, zipped, brotlied):
        assert response["cache-control"] == "public, max-age=31536000, immutable"
        assert response["content-type"] == "application/javascript"
    assert "content-encoding" not in plain and plain.content == BUNDLE
    assert zipped["content-encoding"] == "gzip" and gzip.decompress(zipped.content) == BUNDLE
    assert brotlied["content-encoding"] == "br"
    assert brotli.decompress(brotlied.content) == BUNDLE


def test_a_rollback_serves_the_earlier_release_with_its_id_and_asset_unchanged(app, tmp_storage):
    publish(app, tmp_storage, BUNDLE)
    first = json.loads(ask(app, accept="application/json").content)
    publish(app, tmp_storage, BUNDLE_2)
    second = json.loads(ask(app, accept="application/json").content)

    releases.rollback(app, "production")
    back = json.loads(ask(app, accept="application/json").content)

    assert second["id"] != first["id"]
    assert second["launchAsset"]["url"] != first["launchAsset"]["url"]
    assert back == first
    for manifest, content in ((first, BUNDLE), (second, BUNDLE_2)):  # both still served
        asset = Client().get(manifest["launchAsset"]["url"])
        assert asset.status_code == 200 and asset.content == content
        assert manifest["launchAsset"]["hash"] == b64url_sha256(content)


def test_rollouts_are_sticky_per_install(app, tmp_storage):
    publish(app, tmp_storage)
    releases.Release.objects.update(rollout_percent=30)
    releases.invalidate_update_cache(app, "production")
    clients = [str(uuid.UUID(int=n)) for n in range(200)]

    first = {c for c in clients if ask(app, eas_client_id=c).status_code == 200}
    again = {c for c in clients if ask(app, eas_client_id=c).status_code == 200}
    releases.Release.objects.update(rollout_percent=60)
    releases.invalidate_update_cache(app, "production")
    wider = {c for c in clients if ask(app, eas_client_id=c).status_code == 200}

    assert first == again
    assert 30 <= len(first) <= 90 and first < wider  # nobody who had it loses it


# --- code signing -----------------------------------------------------------------------------
def test_the_app_gets_a_code_signing_certificate_its_client_accepts(
    pro_account, api_client_for, app
):
    client = api_client_for(pro_account)

    made = client.post(f"/api/v1/apps/{app.slug}/code-signing/", {}, format="json")
    pem = client.get(f"/api/v1/apps/{app.slug}/code-signing/certificate.pem/")

    assert made.status_code == 201, made.content
    assert made.json()["key_id"] == "main" and made.json()["algorithm"] == "rsa-v1_5-sha256"
    assert "PRIVATE KEY" not in made.content.decode() + pem.content.decode()
    assert pem.status_code == 200 and pem["content-type"] == "application/x-pem-file"
    certificate = x509.load_pem_x509_certificate(pem.content)
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert usage.digital_signature and ExtendedKeyUsageOID.CODE_SIGNING in extended
    assert certificate.issuer == certificate.subject  # a self-signed root the app embeds
    stored = bytes(AppSigningKey.objects.get(app=app).private_key_encrypted)
    assert b"PRIVATE KEY" not in stored  # encrypted at rest
    listed = client.get(f"/api/v1/apps/{app.slug}/").json()
    assert listed["expo_updates_url"].endswith(f"/api/v1/expo/{app.app_key}/manifest")


def test_signed_manifests_verify_with_the_downloaded_certificate(
    pro_account, api_client_for, app, tmp_storage
):
    client = api_client_for(pro_account)
    client.post(f"/api/v1/apps/{app.slug}/code-signing/", {"key_id": "root"}, format="json")
    certificate = client.get(f"/api/v1/apps/{app.slug}/code-signing/certificate.pem/").content
    publish(app, tmp_storage)
    expect = 'sig, keyid="root", alg="rsa-v1_5-sha256"'

    multipart = ask(app, accept="multipart/mixed", expo_expect_signature=expect)
    json_answer = ask(app, accept="application/expo+json", expo_expect_signature=expect)

    headers, body = parts_of(multipart)["manifest"]
    for signature_header, signed in (
        (headers["expo-signature"], body),
        (json_answer["expo-signature"], json_answer.content),
    ):
        fields = dict(item.strip().split("=", 1) for item in signature_header.split(","))
        assert fields["keyid"] == '"root"' and fields["alg"] == '"rsa-v1_5-sha256"'
        assert signing.verify(certificate.decode(), signed, fields["sig"].strip('"'))
        assert not signing.verify(certificate.decode(), signed + b" ", fields["sig"].strip('"'))


def test_asking_for_a_signature_without_a_key_is_a_clear_400(app, tmp_storage):
    publish(app, tmp_storage)

    error = assert_error(ask(app, expo_expect_signature="sig"), 400, "code_signing_not_configured")

    assert "POST /api/v1/apps/shop/code-signing/" in error["message"]


def test_an_uploaded_key_must_match_its_certificate_and_be_a_code_signing_one(
    pro_account, api_client_for, app
):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    client = api_client_for(pro_account)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    good = signing.self_signed_certificate(key, "mine").public_bytes(serialization.Encoding.PEM)
    wrong = signing.self_signed_certificate(other, "not mine").public_bytes(
        serialization.Encoding.PEM
    )
    url = f"/api/v1/apps/{app.slug}/code-signing/"

    mismatched = client.post(
        url, {"private_key_pem": key_pem, "certificate_pem": wrong.decode()}, format="json"
    )
    half = client.post(url, {"private_key_pem": key_pem}, format="json")
    uploaded = client.post(
        url,
        {"private_key_pem": key_pem, "certificate_pem": good.decode(), "key_id": "team"},
        format="json",
    )

    assert "not for this private key" in assert_error(mismatched, 400, "invalid")["message"]
    assert_error(half, 400, "invalid")
    assert uploaded.status_code == 201 and uploaded.json()["uploaded"] is True
    assert uploaded.json()["key_id"] == "team"


# --- roll back to the embedded bundle -----------------------------------------------------
def test_a_roll_back_to_embedded_is_a_signed_directive_with_its_commit_time(
    pro_account, api_client_for, app, tmp_storage
):
    client = api_client_for(pro_account)
    client.post(f"/api/v1/apps/{app.slug}/code-signing/", {}, format="json")
    certificate = client.get(f"/api/v1/apps/{app.slug}/code-signing/certificate.pem/").content
    publish(app, tmp_storage)
    live = json.loads(ask(app, accept="application/json").content)

    rolled = client.post(
        f"/api/v1/apps/{app.slug}/releases/production/rollback/", {"to": "embedded"}, format="json"
    )
    answer = ask(app, accept="multipart/mixed", expo_expect_signature="sig")

    assert rolled.status_code == 200 and rolled.json()["directive"] == "rollBackToEmbedded"
    assert answer.status_code == 200
    assert_common_headers(answer)
    [(name, (headers, body))] = parts_of(answer).items()
    assert name == "directive"
    directive = json.loads(body)
    assert directive["type"] == "rollBackToEmbedded"
    assert directive["parameters"]["commitTime"].endswith("Z")
    assert directive["parameters"]["commitTime"] >= live["createdAt"]
    signature = headers["expo-signature"].split('sig="')[1].split('"')[0]
    assert signing.verify(certificate.decode(), body, signature)
    # A JSON answer cannot carry a directive; other runtime versions are not touched.
    assert ask(app, accept="application/json").status_code == 406
    assert ask(app, runtime="9.9.9").status_code == 204

    # Rolling back again serves the release as before; publishing replaces the directive.
    client.post(f"/api/v1/apps/{app.slug}/releases/production/rollback/", {}, format="json")
    assert json.loads(ask(app, accept="application/json").content) == live
    publish(app, tmp_storage, BUNDLE_2)
    assert json.loads(ask(app, accept="application/json").content)["id"] != live["id"]


def test_codepush_devices_are_told_to_run_their_binary_after_a_roll_back_to_embedded(
    app, tmp_storage
):
    from publishing import codepush

    publish(app, tmp_storage)
    releases.rollback_to_embedded(app, "production")
    key = next(
        d.key
        for d in codepush.deployments_of(app)
        if d.env == "production" and d.platform == "android"
    )

    info = (
        Client()
        .get(
            "/v0.1/public/codepush/update_check",
            {"deployment_key": key, "app_version": "1.0.0", "label": "v1", "package_hash": "x"},
        )
        .json()["update_info"]
    )

    assert info["is_available"] is False and info["should_run_binary_version"] is True
