"""Redis unavailable: reads fall through to the database, writes succeed, errors are counted,
nothing answers 500; when Redis is back nothing cached before the outage is served stale."""

import time

import httpx
import pytest
import redis as redis_lib
from rest_framework.test import APIClient

from accounts.services import api_key_create
from conversations.models import Conversation
from openspark.core.cache import stats_get
from openspark.embedded import free_port, start_redis
from tests.cache.conftest import ns_stats
from tests.live import start_asgi_server, subprocess_env
from throttling.quota import tokens_settle


def _point_cache_at(settings, url: str) -> None:
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": url,
            "OPTIONS": {**settings.CACHES["default"]["OPTIONS"]},
        }
    }


@pytest.mark.django_db(transaction=True)
def test_outage_reads_the_database_and_recovery_serves_nothing_stale(settings, user, staff_user):
    live_url = settings.CACHES["default"]["LOCATION"]
    settings.CACHE_REDIS_RETRY_SECONDS = 0
    reader = APIClient()
    reader.force_authenticate(user)
    staff = APIClient()
    staff.force_authenticate(staff_user)
    assert reader.get("/api/v1/me/").json()["tokens"]["used_this_month"] == 0
    assert reader.get("/api/v1/me/").json()["tokens"]["used_this_month"] == 0  # cached

    _point_cache_at(settings, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    tokens_settle(user_id=user.id, prompt_tokens=5, completion_tokens=5)  # the write works
    for _ in range(3):
        response = reader.get("/api/v1/me/")
        assert response.status_code == 200
        assert response.json()["tokens"]["used_this_month"] == 10
    stats = staff.get("/api/v1/cache/stats/").json()
    assert stats["redis"] == {"available": False}
    assert ns_stats(stats, "user_profile")["errors"] == 3
    assert stats["version_bumps"]["failed"] == 1

    # Redis is back with the value cached before the write: it must not be served.
    _point_cache_at(settings, live_url)
    assert reader.get("/api/v1/me/").json()["tokens"]["used_this_month"] == 10
    assert reader.get("/api/v1/me/").json()["tokens"]["used_this_month"] == 10
    profile = ns_stats(stats_get(), "user_profile")
    assert (profile["hits"], profile["misses"]) == (2, 2)  # recomputed once, then cached again
    assert profile["errors"] == 3  # the outage's errors were kept and added to Redis


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_live_server_without_redis_answers_correctly(user, live_logs, tmp_path):
    redis = start_redis(tmp_path / "redis", persist=False)
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    server = start_asgi_server(
        live_logs, env=subprocess_env(REDIS_URL=redis.url, CACHE_REDIS_RETRY_SECONDS="0.2")
    )
    try:
        _key, raw = api_key_create(user=user, name="outage")
        client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {raw}"})
        assert client.get("/api/v1/me/").json()["username"] == user.username
        Conversation.objects.create(owner=user, title="before the outage")
        for _ in range(3):  # cached from the second on
            assert client.get("/api/v1/me/").status_code == 200
            assert client.get("/api/v1/conversations/").status_code == 200

        redis.stop()
        for _ in range(5):
            response = client.get("/api/v1/me/")
            assert response.status_code == 200, response.text
            assert response.json()["username"] == user.username
        created = client.post("/api/v1/conversations/", json={"title": "during the outage"})
        assert created.status_code == 201, created.text
        for _ in range(3):
            response = client.get("/api/v1/conversations/")
            assert response.status_code == 200, response.text
            titles = [c["title"] for c in response.json()["results"]]
            assert titles == ["during the outage", "before the outage"]

        redis = start_redis(tmp_path / "redis", port=port, persist=False)
        time.sleep(0.3)  # past the breaker's retry delay
        assert client.get("/api/v1/me/").status_code == 200
        assert client.get("/api/v1/me/").status_code == 200
        raw_redis = redis_lib.Redis.from_url(redis.url)
        (stats_key,) = raw_redis.keys("*:s:user_profile")
        assert int(raw_redis.hgetall(stats_key)[b"hits"]) == 1  # caching resumed
        assert "Redis (cache) unavailable" in server.log(tail=200_000)  # logged, once
    finally:
        server.stop()
        redis.stop()
