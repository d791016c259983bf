"""Every API endpoint answers malformed and hostile input with the error shape — never a 500,
never an HTML page. Paths come from the served schema, so a new endpoint is covered at once."""

import json
import re

import pytest

pytestmark = pytest.mark.django_db

HOSTILE_BODIES = [
    [],
    "just a string",
    12,
    None,
    {"content": None, "name": None, "query": None, "rating": None},
    {"content": ["x"], "name": {"a": 1}, "query": 5, "rating": "up", "title": 7},
    {"conversation_id": "1; DROP TABLE", "knowledge_base_ids": "all", "top_k": -5},
    {"conversation_id": 10**30, "knowledge_base_ids": [10**30], "top_k": 10**9},
    {"content": "\x00\ud800 <script>alert(1)</script>", "name": "\x00", "query": "\x00"},
    {"expires_at": "yesterday", "visibility": "nobody", "chunk_size": "big"},
]
IDS = {"key_id": 999999, "conversation_id": 999999, "message_id": 999999,
       "knowledge_base_id": 999999, "document_id": 999999, "task_id": "../../etc/passwd",
       "namespace": "nope"}  # fmt: skip


def _paths(client):
    schema = client.get("/api/schema/?format=json").json()
    for path, operations in schema["paths"].items():
        concrete = re.sub(r"\{(\w+)\}", lambda m: str(IDS.get(m.group(1), 999999)), path)
        for method in operations:
            if method in ("get", "post", "put", "patch", "delete"):
                yield method, concrete


def _assert_error_shape(response):
    assert response.status_code < 500, (response.request, response.content[:300])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert body["error"]["code"] and body["error"]["message"]


@pytest.mark.parametrize("as_staff", [False, True])
def test_hostile_bodies_never_cause_a_500(client, user, staff_user, as_staff):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(staff_user if as_staff else user)
    for method, path in _paths(client):
        if method in ("get", "delete"):
            _assert_error_shape(getattr(api, method)(path))
            continue
        for body in HOSTILE_BODIES:
            # json.dumps escapes the lone surrogate as \\ud800, as a hostile client would send it.
            payload = json.dumps(body)
            _assert_error_shape(
                api.generic(method.upper(), path, payload, content_type="application/json")
            )
        raw = api.generic(
            method.upper(), path, b"\xff\xfe{not json", content_type="application/json"
        )
        _assert_error_shape(raw)


def test_hostile_query_strings_never_cause_a_500(auth_client, client):
    for method, path in _paths(client):
        if method != "get":
            continue
        too_many = "&".join(f"f{n}=1" for n in range(1500))  # > DATA_UPLOAD_MAX_NUMBER_FIELDS
        for query in ("page=-1", "page=abc", "page_size=999999", "page=1&page_size=0", "%00=%ff",
                      too_many):  # fmt: skip
            _assert_error_shape(auth_client.get(f"{path}?{query}"))


def test_a_host_not_allowed_gets_the_error_shape_too(auth_client):
    response = auth_client.get("/api/v1/me/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    _assert_error_shape(response)


def test_ids_beyond_64_bits_in_urls_and_frames_are_404_or_400(auth_client):
    huge = "9" * 30
    for path in (f"/api/v1/conversations/{huge}/", f"/api/v1/messages/{huge}/",
                 f"/api/v1/knowledge/documents/{huge}/", f"/api/v1/api-keys/{huge}/",
                 f"/api/v1/conversations/{'9' * 18}/"):  # fmt: skip
        response = auth_client.get(path)
        assert response.status_code in (404, 405), (path, response.status_code)
        assert response.json()["error"]["code"] in ("not_found", "method_not_allowed")
    response = auth_client.post(
        "/api/v1/messages/", {"content": "hi", "conversation_id": int(huge)}, format="json"
    )
    assert response.status_code == 400
    assert "conversation_id" in response.json()["error"]["details"]
