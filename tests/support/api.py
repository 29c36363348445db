"""What API tests check on every answer."""


def assert_error(response, status, code):
    """The answer is BuildHub's JSON error: ``{"error": {"code": ..., "message": ...}}``."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]
