import pytest

from tests.factories import plan
from throttling.quota import tokens_settle

pytestmark = pytest.mark.django_db


def test_me_shows_default_free_plan(auth_client, user):
    body = auth_client.get("/api/v1/me/").json()
    assert body["username"] == user.username
    assert body["plan"]["tier"] == "free"
    assert body["plan"]["requests_per_minute"] == 100
    assert body["plan"]["endpoint_limits"] == {
        "conversations": 60,
        "messages": 120,
        "knowledge": 30,
        "polling": 60,
    }


def test_me_follows_plan_change(auth_client, user):
    user.plan = plan("enterprise")
    user.save(update_fields=["plan"])
    body = auth_client.get("/api/v1/me/").json()
    assert body["plan"]["tier"] == "enterprise"
    assert body["plan"]["requests_per_minute"] == 2000


def test_me_reports_tokens_used_this_month(auth_client, user):
    tokens_settle(user_id=user.id, prompt_tokens=100, completion_tokens=23)
    tokens_settle(user_id=user.id, prompt_tokens=7, completion_tokens=0)
    tokens = auth_client.get("/api/v1/me/").json()["tokens"]
    assert tokens["used_this_month"] == 130
    assert tokens["remaining"] == tokens["quota"] - 130


def test_me_requires_authentication(api_client):
    response = api_client.get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "not_authenticated",
            "message": response.json()["error"]["message"],
            "details": {},
        }
    }
