"""Tenant isolation: every object endpoint of the API, called with another account's token,
answers 404 (as if the object did not exist), never 403 or 200, for every verb.

The endpoints come from the OpenAPI schema, so an endpoint added later is in the matrix at
once; one whose path names an object this file cannot make fails until it is added to
``OBJECT_FOR`` in tests/security/endpoints.py (or, if public by design, to
``PUBLIC_BY_DESIGN`` with the reason).
"""

import pytest

from tests.security.endpoints import OPERATIONS, PUBLIC_BY_DESIGN, WRITE_METHODS, fill

pytestmark = pytest.mark.django_db
OBJECT_OPERATIONS = [
    (path, method) for path, method in OPERATIONS if "{" in path and path not in PUBLIC_BY_DESIGN
]
LIST_OPERATIONS = [(path, method) for path, method in OPERATIONS if "{" not in path]


def call(client, method, url):
    if method in WRITE_METHODS:
        return getattr(client, method)(url, {}, format="json")
    return client.get(url)


def test_the_matrix_covers_the_object_endpoints_on_main():
    covered = {path for path, _ in OBJECT_OPERATIONS}
    for path in [
        "/api/v1/jobs/{id}/",
        "/api/v1/jobs/{id}/logs/",
        "/api/v1/jobs/{id}/cancel/",
        "/api/v1/jobs/{id}/retry/",
        "/api/v1/jobs/{id}/run-now/",
        "/api/v1/apps/{slug}/",
        "/api/v1/apps/{slug}/versions/",
        "/api/v1/apps/{slug}/versions/{number}/publish/",
        "/api/v1/apps/{slug}/releases/{env}/rollback/",
        "/api/v1/artifacts/{id}/",
        "/api/v1/artifacts/{id}/download/",
        "/api/v1/accounts/{slug}/",
    ]:
        assert path in covered


@pytest.mark.parametrize(("path", "method"), OBJECT_OPERATIONS)
def test_another_accounts_object_is_not_found(path, method, victim, intruder):
    url = fill(path, victim)

    refused = call(intruder, method, url)

    if refused.status_code == 403 and call(victim.client, method, url).status_code == 403:
        # Staff-only: every account token is refused alike, whoever owns the object.
        return
    assert refused.status_code == 404, (method, url, refused.status_code, refused.content)
    assert refused.json()["error"]["code"] == "not_found"
    for marker in victim.markers():
        assert marker not in refused.content.decode()
    # The object is there for its owner: the 404 above is isolation, not a wrong id.
    owned = call(victim.client, method, url)
    assert owned.status_code != 404, (method, url, owned.content)


@pytest.mark.parametrize(("path", "method"), [op for op in LIST_OPERATIONS if op[1] == "get"])
def test_lists_never_show_another_accounts_objects(path, method, victim, intruder):
    response = intruder.get(path)

    assert response.status_code < 500
    for marker in victim.markers():
        assert marker not in response.content.decode(), (path, marker)


def test_staff_endpoints_naming_another_account_need_staff(victim, intruder):
    """A token cannot reach another account by naming it, as staff do with ?account=."""
    response = intruder.get(f"/api/v1/apps/?account={victim.account.slug}")

    assert response.status_code == 200
    assert victim.app.slug not in response.content.decode()
