import pytest

pytestmark = pytest.mark.django_db


def test_openapi_schema_lists_the_v1_endpoints(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for expected in (
        "/api/v1/me/",
        "/api/v1/api-keys/",
        "/api/v1/api-keys/{key_id}/",
        "/api/v1/tasks/{task_id}/",
    ):
        assert expected in paths


def test_swagger_ui_is_served_offline(client):
    html = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "https://" not in html.split("<body")[0]
    assert "/static/drf_spectacular_sidecar/" in html
    asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200
