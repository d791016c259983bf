import pytest

pytestmark = pytest.mark.django_db


# Every DRF endpoint of shared/design/API.md, as the served schema names it. (The SSE stream,
# messages/{id}/stream, is a plain async view and documented in docs/chat.md instead.)
CONTRACT = {
    "/api/v1/me/": {"get"},
    "/api/v1/api-keys/": {"get", "post"},
    "/api/v1/api-keys/{key_id}/": {"delete"},
    "/api/v1/conversations/": {"get", "post"},
    "/api/v1/conversations/{conversation_id}/": {"get", "patch", "delete"},
    "/api/v1/conversations/{conversation_id}/messages/": {"get"},
    "/api/v1/conversations/{conversation_id}/export": {"get"},
    "/api/v1/assistants/": {"get", "post"},
    "/api/v1/assistants/options/": {"get"},
    "/api/v1/assistants/{assistant_id}/": {"get", "patch", "delete"},
    "/api/v1/messages/": {"post"},
    "/api/v1/messages/{message_id}/": {"get"},
    "/api/v1/messages/{message_id}/stop": {"post"},
    "/api/v1/messages/{message_id}/regenerate": {"post"},
    "/api/v1/messages/{message_id}/feedback": {"post"},
    "/api/v1/knowledge/bases/": {"get", "post"},
    "/api/v1/knowledge/bases/{knowledge_base_id}/": {"get", "patch", "delete"},
    "/api/v1/knowledge/bases/{knowledge_base_id}/documents/": {"get", "post"},
    "/api/v1/knowledge/documents/{document_id}/": {"get", "delete"},
    "/api/v1/knowledge/documents/{document_id}/reindex": {"post"},
    "/api/v1/knowledge/search": {"post"},
    "/api/v1/tasks/{task_id}/": {"get"},
    # Additions (docs/api.md).
    "/api/v1/tasks/": {"get"},
    "/api/v1/notifications/": {"get"},
    "/api/v1/notifications/{notification_id}/read": {"post"},
    "/api/v1/notifications/read-all": {"post"},
    "/api/v1/notifications/preferences/": {"get", "patch"},
    "/api/v1/rate-limit/status/": {"get"},
    "/api/v1/rate-limit/stats/": {"get"},
    "/api/v1/cache/stats/": {"get"},
    "/api/v1/cache/warm/": {"post"},
    "/api/v1/cache/{namespace}/": {"delete"},
}


def test_openapi_schema_matches_the_contract(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path, methods in CONTRACT.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))


def test_swagger_ui_is_served_offline(client):
    html = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "https://" not in html.split("<body")[0]
    assert "/static/drf_spectacular_sidecar/" in html
    asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_components_are_named_after_their_views_and_the_api_key_is_declared(client):
    schema = client.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    # Nested serializers of different views used to share one component each ("Output").
    assert not {"Input", "Output"} & set(components)
    assert {"MeOutput", "KnowledgeSearchInput", "KnowledgeSearchOutput"} <= set(components)
    assert components["MeOutput"] != components["KnowledgeSearchOutput"]
    assert schema["components"]["securitySchemes"]["apiKeyAuth"]["scheme"] == "bearer"
    me = schema["paths"]["/api/v1/me/"]["get"]
    assert {"apiKeyAuth": []} in me["security"]


def test_every_operation_documents_the_errors_it_can_answer(client):
    """The schema is honest about status codes (openspark.core.schema.error_responses; a
    fuzzer holds the API to it, tests/reliability/test_fuzz.py)."""
    schema = client.get("/api/schema/?format=json").json()
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            expected = {"400", "401", "403", "429", "503"}
            if "{" in path:
                expected.add("404")
            if "requestBody" in operation:
                expected |= {"413", "415"}
            assert expected <= set(responses), (method, path, sorted(responses))
            for code in expected:
                assert responses[code]["content"]["application/json"]["schema"] == error
            assert "Retry-After" in responses["429"]["headers"], (method, path)


def test_paginated_lists_document_the_page_envelope(client):
    schema = client.get("/api/schema/?format=json").json()
    components = schema["components"]["schemas"]
    for path in ("/api/v1/conversations/", "/api/v1/api-keys/", "/api/v1/tasks/",
                 "/api/v1/notifications/", "/api/v1/knowledge/bases/"):  # fmt: skip
        operation = schema["paths"][path]["get"]
        assert {"page", "page_size"} <= {p["name"] for p in operation["parameters"]}, path
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = components[ref.rpartition("/")[2]]
        assert {"count", "next", "previous", "results"} <= set(page["properties"]), path
    notifications = schema["paths"]["/api/v1/notifications/"]["get"]["responses"]["200"]
    ref = notifications["content"]["application/json"]["schema"]["$ref"]
    assert "unread_count" in components[ref.rpartition("/")[2]]["properties"]
