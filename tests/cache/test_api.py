"""Staff cache APIs: stats that match the requests made, purge, warm; permissions."""

import pytest
from rest_framework.test import APIClient

from openspark.core.models import TaskRecord
from tests.cache.conftest import ns_stats

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(staff_user):
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


def test_stats_count_exactly_the_requests_made(auth_client, staff_client):
    for _ in range(7):
        assert auth_client.get("/api/v1/me/").status_code == 200
    body = staff_client.get("/api/v1/cache/stats/").json()
    profile = ns_stats(body, "user_profile")
    assert (profile["misses"], profile["hits"], profile["sets"]) == (1, 6, 1)
    assert profile["hit_ratio"] == round(6 / 7, 4)
    assert profile["errors"] == 0
    assert profile["ttl"] == 3600
    assert profile["latency_ms_avg"] > 0 and profile["latency_ms_p95"] >= profile["latency_ms_p50"]
    assert {ns["name"] for ns in body["namespaces"]} == {
        "user_profile", "user_conversations", "conversation_history", "document_content",
        "ai_response", "retrieval", "rate_limit", "api_key",
    }  # fmt: skip
    assert body["redis"]["available"] is True
    assert body["redis"]["used_memory"] > 0
    assert "evicted_keys" in body["redis"] and "maxmemory_policy" in body["redis"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/cache/stats/"),
        ("post", "/api/v1/cache/warm/"),
        ("delete", "/api/v1/cache/user_profile/"),
    ],
)
def test_cache_apis_are_staff_only(auth_client, api_client, method, path):
    assert getattr(api_client, method)(path).status_code == 401
    response = getattr(auth_client, method)(path, {"documents": True}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_purge_forces_the_next_read_to_the_database(auth_client, staff_client):
    auth_client.get("/api/v1/me/")
    response = staff_client.delete("/api/v1/cache/user_profile/")
    assert response.status_code == 200
    assert response.json() == {"namespace": "user_profile", "deleted_keys": 1}
    auth_client.get("/api/v1/me/")
    assert ns_stats(staff_client.get("/api/v1/cache/stats/").json(), "user_profile")["misses"] == 2


def test_purge_refuses_unknown_and_limiter_namespaces(staff_client):
    response = staff_client.delete("/api/v1/cache/nope/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    response = staff_client.delete("/api/v1/cache/rate_limit/")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_warm_queues_tasks_the_caller_can_follow(staff_client, staff_user, user):
    response = staff_client.post("/api/v1/cache/warm/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    response = staff_client.post(
        "/api/v1/cache/warm/", {"user_ids": [user.id], "documents": True}, format="json"
    )
    assert response.status_code == 202
    body = response.json()
    assert body["users"] == 1 and len(body["task_ids"]) == 2
    names = set(TaskRecord.objects.filter(user=staff_user).values_list("name", flat=True))
    assert names == {"cache_warm_users", "cache_warm_hot_documents"}
