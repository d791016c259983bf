"""Each plan's own endpoint-group limits, the polling group kept apart from sending, and a
429 that says which limit refused (Django test client, real Redis, exact sliding windows)."""

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory, plan
from throttling.identity import Identity
from throttling.models import LayerPolicy
from throttling.rules import ALL_LAYERS, endpoint_group_for, limiter_rules_build
from throttling.selectors import limiter_config_get

pytestmark = pytest.mark.django_db

SCALED = {
    "free": {"conversations": 60, "messages": 120, "knowledge": 30, "polling": 60},
    "pro": {"conversations": 300, "messages": 600, "knowledge": 150, "polling": 300},
    "enterprise": {"conversations": 1200, "messages": 2400, "knowledge": 600, "polling": 1200},
}


@pytest.fixture(autouse=True)
def _exact_windows():
    """Exact counts however slow the machine: no token-bucket refill during a test."""
    LayerPolicy.objects.filter(layer__in=["plan", "endpoint"]).update(algorithm="sliding_window")


def _client(tier: str) -> APIClient:
    client = APIClient()
    client.force_login(UserFactory(plan=plan(tier)))  # a session: the SSE view reads it too
    return client


def _statuses(client, method: str, path: str, count: int) -> list[int]:
    return [getattr(client, method)(path).status_code for _ in range(count)]


def test_a_pro_user_gets_past_210_a_minute_across_groups_up_to_the_plan(test_urls):
    client = _client("pro")
    assert _statuses(client, "get", "/api/v1/knowledge/_t/", 150) == [200] * 150
    refused = client.get("/api/v1/knowledge/_t/")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["details"] == {
        "layer": "endpoint:knowledge", "limit": 150, "window_seconds": 60,
        "retry_after": error["details"]["retry_after"],
    }  # fmt: skip
    assert "the knowledge limit of your Pro plan, 150 per minute" in error["message"]
    assert _statuses(client, "post", "/api/v1/conversations/_t/", 300) == [201] * 300
    # 450 so far, the refused one costing nothing: 50 messages more reach the plan's 500.
    assert _statuses(client, "post", "/api/v1/messages/_t/", 50) == [201] * 50
    refused = client.post("/api/v1/messages/_t/")
    assert refused.status_code == 429
    assert refused["RateLimit-Policy"] == '"plan";q=500;w=60'
    assert (
        "the request limit of your Pro plan, 500 per minute" in refused.json()["error"]["message"]
    )


@pytest.mark.parametrize("tier", ["free", "pro", "enterprise"])
def test_each_plan_enforces_its_own_group_limits(tier, test_urls):
    client = _client(tier)
    limits = SCALED[tier]
    statuses = _statuses(client, "get", "/api/v1/knowledge/_t/", limits["knowledge"] + 1)
    assert statuses == [200] * limits["knowledge"] + [429]
    # The other groups' requests are limited at this plan's numbers (the tightest layer).
    conversations = client.post("/api/v1/conversations/_t/")
    assert conversations["RateLimit-Policy"] == (
        f'"endpoint:conversations";q={limits["conversations"]};w=60'
    )
    polling = client.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000/")
    assert polling["RateLimit-Policy"] == f'"endpoint:polling";q={limits["polling"]};w=60'
    shown = client.get("/api/v1/me/").json()
    assert shown["plan"]["endpoint_limits"] == limits
    for group, limit in limits.items():
        assert shown["usage"][f"endpoint:{group}"]["limit"] == limit


def test_every_group_is_built_from_the_callers_plan():
    config = limiter_config_get()
    for tier, limits in SCALED.items():
        identity = Identity(user_id=1, plan_id=plan(tier).pk, ip="203.0.113.9")
        for group, path, method in [
            ("conversations", "/api/v1/conversations/", "POST"),
            ("messages", "/api/v1/messages/", "POST"),
            ("knowledge", "/api/v1/knowledge/search", "POST"),
            ("polling", "/api/v1/messages/7/", "GET"),
        ]:
            rules = limiter_rules_build(
                config=config, identity=identity, path=path, method=method, layers=ALL_LAYERS
            )
            endpoint = [rule for rule in rules if rule.layer.startswith("endpoint:")]
            assert [(rule.layer, rule.limit) for rule in endpoint] == [
                (f"endpoint:{group}", limits[group])
            ]


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("GET", "/api/v1/messages/7/", "polling"),
        ("GET", "/api/v1/messages/7/stream", "polling"),
        ("HEAD", "/api/v1/messages/7/", "polling"),
        ("GET", "/api/v1/tasks/3f2a/", "polling"),
        ("GET", "/api/v1/conversations/12/messages/", "polling"),
        ("POST", "/api/v1/messages/", "messages"),
        ("POST", "/api/v1/messages/7/regenerate", "messages"),
        ("POST", "/api/v1/messages/7/stop", "messages"),
        ("GET", "/api/v1/conversations/12/", "conversations"),
        ("GET", "/api/v1/conversations/", "conversations"),
        ("GET", "/api/v1/knowledge/documents/4/", "knowledge"),
        ("GET", "/api/v1/me/", None),
    ],
)
def test_reads_of_messages_and_tasks_are_polling_writes_are_messages(method, path, group):
    assert endpoint_group_for(path=path, method=method) == group


def test_polling_a_reply_never_stops_the_next_send():
    pro = plan("pro")
    # Staff tightened the groups: 150 polls would have used up sending if they counted there.
    pro.messages_per_minute = 100
    pro.polling_per_minute = 150
    pro.save()
    client = _client("pro")
    sent = client.post("/api/v1/messages/", {"content": "hello"}, format="json")
    assert sent.status_code == 202
    reply, task_id = sent.json()["reply"], sent.json()["task_id"]
    conversation_id = sent.json()["message"]["conversation_id"]

    assert _statuses(client, "get", f"/api/v1/messages/{reply['id']}/", 149) == [200] * 149
    assert client.get(f"/api/v1/tasks/{task_id}/").status_code == 200
    # The polling budget is spent, for every read that polls (the stream too: its path and
    # method are classified like these, test above; its async view needs a live server)...
    for path in [
        f"/api/v1/messages/{reply['id']}/",
        f"/api/v1/tasks/{task_id}/",
        f"/api/v1/conversations/{conversation_id}/messages/",
    ]:
        refused = client.get(path)
        assert refused.status_code == 429, path
        assert refused.json()["error"]["details"]["layer"] == "endpoint:polling"
    assert (
        "the polling (reading messages and tasks) limit of your Pro plan, 150 per minute"
        in (refused.json()["error"]["message"])
    )
    # ...and sending has all of its own.
    again = client.post("/api/v1/messages/", {"content": "and again"}, format="json")
    assert again.status_code == 202
    usage = client.get("/api/v1/me/").json()["usage"]
    assert usage["endpoint:messages"]["used"] == 2
    assert usage["endpoint:polling"]["used"] == 150


def test_the_refusal_names_the_limit_in_chinese(test_urls):
    client = _client("free")
    _statuses(client, "get", "/api/v1/knowledge/_t/", 30)
    refused = client.get("/api/v1/knowledge/_t/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert refused.status_code == 429
    assert "您的免费版套餐的知识库限额（每分钟 30 次）" in refused.json()["error"]["message"]  # noqa: RUF001
