"""Every API error has one shape: {"error": {"code", "message", "details"}}."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def _assert_shape(response, status: int, code: str):
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_unknown_api_url_is_json_404(auth_client):
    _assert_shape(auth_client.get("/api/v1/does-not-exist/"), 404, "not_found")


def test_method_not_allowed(auth_client):
    _assert_shape(auth_client.put("/api/v1/me/", {}, format="json"), 405, "method_not_allowed")


def test_malformed_json_is_validation_error(session_client):
    response = session_client.post(
        "/api/v1/api-keys/", "{not json", content_type="application/json"
    )
    _assert_shape(response, 400, "validation_error")


def test_validation_error_names_the_field(session_client):
    error = _assert_shape(
        session_client.post("/api/v1/api-keys/", {}, format="json"), 400, "validation_error"
    )
    assert "name" in error["details"]
    assert error["message"].startswith("name:")


def test_unsupported_media_type(session_client):
    response = session_client.post("/api/v1/api-keys/", "name=x", content_type="text/plain")
    _assert_shape(response, 415, "unsupported_media_type")


def test_csrf_failure_with_session_is_403_shape(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/api/v1/api-keys/", {"name": "x"}, content_type="application/json")
    _assert_shape(response, 403, "permission_denied")


@pytest.mark.parametrize(
    ("urls", "status", "code", "retry_after"),
    [
        # An unhandled exception: 500 without details.
        (("/api/v1/test-crash/", "/api/v1/test-crash-plain/"), 500, "server_error", None),
        # A database that is down, locked or out of pooled connections: 503 with Retry-After.
        (
            ("/api/v1/test-db-down/", "/api/v1/test-db-down-plain/"),
            503,
            "dependency_unavailable",
            "5",
        ),
    ],
)
def test_server_side_failures_keep_the_shape_and_hide_details(
    settings, urls, status, code, retry_after
):
    settings.ROOT_URLCONF = "tests.core.urls_for_tests"
    client = Client(raise_request_exception=False)
    for url in urls:  # through DRF's handler and through the middleware
        response = client.get(url)
        error = _assert_shape(response, status, code)
        assert response.get("Retry-After") == retry_after
        assert "secret detail" not in response.content.decode()
        assert error["details"] == {}


def test_oversized_body_is_413(auth_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = auth_client.post("/api/v1/api-keys/", {"name": "x" * 5000}, format="json")
    _assert_shape(response, 413, "file_too_large")


def test_invalid_page_is_404_shape(session_client):
    _assert_shape(session_client.get("/api/v1/api-keys/?page=99"), 404, "not_found")
