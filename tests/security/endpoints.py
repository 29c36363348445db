"""The API's operations, read from its OpenAPI schema, and the objects that fill their paths.

Every suite in tests/security/ walks these, so an endpoint added to the API is tested by
them at once; a path naming an object not listed in ``OBJECT_FOR`` fails until it is added.
"""

import re

import pytest
from drf_spectacular.generators import SchemaGenerator

WRITE_METHODS = {"post", "put", "patch", "delete"}

# Endpoints that answer without an account token, by design; isolation is the signature or
# the id's unguessability, tested where they are implemented.
PUBLIC_BY_DESIGN = {
    # Signed, expiring links; without a valid signature 403 (tests/publishing).
    "/api/v1/artifacts/{artifact_id}/file/",
    # Public OTA bundles that devices download by their random id (release.json names them).
    "/api/v1/bundles/{artifact_id}/",
    # Expo Updates: devices name the app by its public app key (tests/publishing/test_expo*).
    "/api/v1/expo/{app_key}/manifest",
    "/api/v1/expo/assets/{artifact_id}",
    # CodePush packages, named by random id in the update check's answer.
    "/api/v1/codepush/packages/{artifact_id}",
}

# (collection the parameter follows, parameter) -> the victim's object it names.
OBJECT_FOR = {
    ("accounts", "slug"): lambda v: v.account.slug,
    ("jobs", "id"): lambda v: v.queued_job.pk,
    ("builds", "id"): lambda v: v.build.pk,
    ("apps", "slug"): lambda v: v.app.slug,
    ("versions", "number"): lambda v: v.version.number,
    ("releases", "env"): lambda v: "production",
    ("artifacts", "id"): lambda v: v.artifact.pk,
    ("artifacts", "artifact_id"): lambda v: v.artifact.pk,
    ("bundles", "artifact_id"): lambda v: v.artifact.pk,
    ("build-runs", "run_id"): lambda v: v.build_run.run_id,
    ("expo", "app_key"): lambda v: v.app.app_key,
    ("deployments", "env"): lambda v: "production",
    ("packages", "artifact_id"): lambda v: v.artifact.pk,
    ("{env}", "platform"): lambda v: "android",
    ("assets", "artifact_id"): lambda v: v.artifact.pk,
    ("sources", "upload_id"): lambda v: v.upload.pk,
}


SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
OPERATIONS = sorted(
    (path, method)
    for path, item in SCHEMA["paths"].items()
    for method in item
    if method in {"get", *WRITE_METHODS}
)
# The operations that take an account's API token (the others are public by design).
TOKEN_OPERATIONS = [
    (path, method)
    for path, method in OPERATIONS
    if any("ApiToken" in option for option in SCHEMA["paths"][path][method].get("security", []))
]


def object_for(path: str, parameter: str, victim) -> str:
    """The victim's object that ``{parameter}`` of ``path`` names (by the collection before it)."""
    before = path[: path.index("{" + parameter + "}")].rstrip("/").rsplit("/", 1)[-1]
    maker = OBJECT_FOR.get((before, parameter))
    if maker is None:
        pytest.fail(
            f"{path}: no object of the victim for {{{parameter}}} after '{before}/'; "
            "add one to OBJECT_FOR in tests/security/endpoints.py"
        )
    return str(maker(victim))


def fill(path: str, victim) -> str:
    """``path`` with each ``{parameter}`` replaced by the victim's object it names."""
    return re.sub(r"\{(\w+)\}", lambda match: object_for(path, match.group(1), victim), path)
