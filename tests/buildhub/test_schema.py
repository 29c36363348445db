import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_openapi_schema_describes_bearer_tokens_and_the_api():
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["securitySchemes"]["ApiToken"]["scheme"] == "bearer"
    assert "/api/v1/accounts/" in schema["paths"]


def test_api_docs_are_served_without_a_cdn():
    page = Client().get("/api/docs/").content.decode()

    assert "swagger-ui" in page
    assert "cdn.jsdelivr" not in page
    assert "/static/drf_spectacular_sidecar/" in page
