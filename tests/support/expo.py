"""Expo Updates in tests: a published bundle and a client's manifest request and reading."""

import email.parser
import email.policy

from django.test import Client

from builds.engine.runner import run_next_job
from publishing import releases
from tests.support.publishing import finished_ota_build

BUNDLE = b"\xc6\x1f\xbc\x03 hermes bytecode of version 1 " + bytes(range(256)) * 8
BUNDLE_2 = b"\xc6\x1f\xbc\x03 hermes bytecode of version 2 " + bytes(range(256)) * 9


def publish(app, tmp_path, content=BUNDLE, env="production", platform="android"):
    job, bundle, _ = finished_ota_build(app, platform, content=content, tmp_path=tmp_path)
    version = releases.create_version(app, [job.pk])
    publish_job, _ = releases.request_publish(version, env)
    assert run_next_job() == str(publish_job.pk)
    return bundle


def ask(app, *, platform="android", runtime="1.0.0", channel="production", accept=None, **more):
    headers = {
        "HTTP_EXPO_PROTOCOL_VERSION": "1",
        "HTTP_EXPO_PLATFORM": platform,
        "HTTP_EXPO_RUNTIME_VERSION": runtime,
        "HTTP_EXPO_CHANNEL_NAME": channel,
        "HTTP_ACCEPT": accept
        or "application/expo+json;q=0.9, application/json;q=0.8, multipart/mixed",
    }
    headers.update(
        {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in more.items()}
    )
    headers = {name: value for name, value in headers.items() if value is not None}
    return Client().get(f"/api/v1/expo/{app.app_key}/manifest", **headers)


def parts_of(response) -> dict[str, tuple[dict, bytes]]:
    """A multipart/mixed answer as a client reads it: part name → (headers, exact body)."""
    raw = f"content-type: {response['content-type']}\r\n\r\n".encode() + response.content
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = (dict(part.items()), part.get_payload(decode=True))
    return parts
