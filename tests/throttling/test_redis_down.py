"""Redis stopped mid-test: requests keep being answered (never a 500), per-process fallback
buckets keep limiting, an alert is recorded; fail-closed layers refuse with 503."""

import time

import pytest

from openspark.embedded import start_redis
from throttling.limiter import Rule, limiter_consume
from throttling.models import Alert, LayerPolicy

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_redis(settings, tmp_path):
    """A Redis of this test's own, so stopping it harms nobody else."""
    service = start_redis(tmp_path / "redis", persist=False)
    settings.REDIS_URL = service.url
    settings.THROTTLE_REDIS_RETRY_SECONDS = 0.2
    yield service
    service.stop()


def test_redis_stopped_mid_test_fails_open_with_fallback_and_alert(auth_client, own_redis):
    statuses = [auth_client.get("/api/v1/me/").status_code for _ in range(30)]
    assert statuses == [200] * 30
    assert not Alert.objects.exists()

    own_redis.stop()
    started = time.monotonic()
    statuses = []
    while len(statuses) < 300:
        statuses.append(auth_client.get("/api/v1/me/").status_code)
        if statuses[-1] != 200:
            break
    # The per-process fallback bucket starts full for this user: its 100 (plus the refill
    # during the loop) pass, none is a 500, and then the limit holds.
    assert statuses[-1] == 429
    assert 100 <= len(statuses) - 1 <= 100 + int(100 * (time.monotonic() - started) / 60) + 1
    refused = auth_client.get("/api/v1/me/")
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["layer"] == "plan"
    alert = Alert.objects.get(kind=Alert.Kind.FAIL_OPEN)
    assert "Connection" in alert.details["error"]
    assert alert.count == 1  # de-duplicated: one alert, not one per request


def test_fail_closed_layer_refuses_with_503(auth_client, own_redis):
    policy = LayerPolicy.objects.get(layer="plan")
    policy.fail_mode = "closed"
    policy.save()
    assert auth_client.get("/api/v1/me/").status_code == 200
    own_redis.stop()
    response = auth_client.get("/api/v1/me/")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "dependency_unavailable" and error["details"]["layer"] == "plan"
    assert response["Retry-After"] == "1"
    assert Alert.objects.filter(kind=Alert.Kind.FAIL_CLOSED).count() == 1


def test_status_and_stats_without_redis_are_not_500(auth_client, staff_user, own_redis):
    own_redis.stop()
    status = auth_client.get("/api/v1/rate-limit/status/")
    assert status.status_code == 200 and status.json()["degraded"] is True
    auth_client.force_authenticate(staff_user)
    stats = auth_client.get("/api/v1/rate-limit/stats/")
    assert stats.status_code == 503
    assert stats.json()["error"]["code"] == "dependency_unavailable"


def test_limiter_recovers_when_redis_is_back(own_redis, tmp_path, settings):
    rule = Rule("plan", "u:recover", limit=5)
    assert not limiter_consume(rules=[rule]).degraded
    port = own_redis.url.rsplit(":", 1)[1].split("/")[0]
    own_redis.stop()
    assert limiter_consume(rules=[rule]).degraded
    restarted = start_redis(tmp_path / "redis2", port=int(port), persist=False)
    try:
        time.sleep(0.25)  # past THROTTLE_REDIS_RETRY_SECONDS
        assert not limiter_consume(rules=[rule]).degraded
    finally:
        restarted.stop()


@pytest.mark.django_db(transaction=True)
def test_api_key_requests_survive_redis_stopping(user, own_redis, settings):
    from rest_framework.test import APIClient

    from accounts.services import api_key_create

    # The cache (where the key's row is) on the same Redis as the limiter.
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": own_redis.url}}
    settings.CACHE_REDIS_RETRY_SECONDS = 0.2
    _key, raw_key = api_key_create(user=user, name="k")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert [client.get("/api/v1/me/").status_code for _ in range(3)] == [200] * 3
    own_redis.stop()
    # Limiter fails open, the key is read from the database: answered, never a 500.
    assert [client.get("/api/v1/me/").status_code for _ in range(5)] == [200] * 5
    client.credentials(HTTP_AUTHORIZATION="Bearer osk_not-a-real-key")
    assert client.get("/api/v1/me/").status_code == 401
