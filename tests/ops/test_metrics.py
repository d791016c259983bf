"""/metrics: who may read it, and the series real requests, limiter decisions, cache reads and
queued tasks produce, with the same numbers the staff statistics report."""

import uuid

import pytest
from django.test import Client

from openspark.celery import app as celery_app
from openspark.core.cache.stats import stats_get
from tests.factories import plan
from tests.prom import scrape
from throttling.limiter import stats_flush
from throttling.models import LayerPolicy
from throttling.selectors import limiter_stats_get

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_limiter_keys(settings):
    """This test's limiter counters only (the limiter's keys live under the prefix)."""
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"


def _error(response) -> str:
    return response.json()["error"]["code"]


def test_anonymous_non_staff_and_wrong_tokens_are_refused(user, settings):
    anonymous = Client().get("/metrics")
    assert anonymous.status_code == 401 and _error(anonymous) == "not_authenticated"
    assert anonymous["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"openspark_" not in anonymous.content

    member = Client()
    member.force_login(user)
    refused = member.get("/metrics")
    assert refused.status_code == 403 and _error(refused) == "permission_denied"

    for header in ("Bearer wrong-token", "Bearer test-metrics-token extra", "Bearer"):
        response = Client().get("/metrics", headers={"Authorization": header})
        assert response.status_code == 401 and _error(response) == "not_authenticated", header

    settings.METRICS_TOKEN = ""  # token access off: no bearer token opens it
    response = Client().get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 401


def test_staff_sessions_and_the_token_are_accepted(staff_user):
    staff = Client()
    staff.force_login(staff_user)
    response = staff.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response["Cache-Control"].startswith("max-age=0")
    assert "openspark_http_requests_total" in response.content.decode()

    scraper = Client().get("/metrics", headers={"AUTHORIZATION": "bearer  test-metrics-token"})
    assert scraper.status_code == 200
    # A staff session does not excuse a wrong token: the scraper's mistake must show.
    assert staff.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_requests_limiter_decisions_and_cache_reads_match_the_staff_statistics(auth_client):
    policy = LayerPolicy.objects.get(layer="plan")
    policy.algorithm = "sliding_window"  # exact: no refill during the test
    policy.save()
    free = plan("free")
    free.requests_per_minute = 3
    free.save()
    metrics = Client()
    before = scrape(metrics)

    statuses = [auth_client.get("/api/v1/me/").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    auth_client.get("/api/v1/no-such-endpoint/")

    after = scrape(metrics)

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    requests = "openspark_http_requests_total"
    assert delta(requests, method="GET", route="me", status="200") == 3
    assert delta(requests, method="GET", route="me", status="429") == 2
    assert delta(requests, method="GET", route="unmatched", status="404") == 1
    assert delta("openspark_http_request_duration_seconds_count", route="me") == 5

    # The limiter: the plan refused 2 of 5 (the 404 was refused by nobody), the same counts
    # as the staff statistics of this test's (fresh) limiter keys.
    decisions = "openspark_limiter_decisions_total"
    assert delta(decisions, layer="plan", outcome="allowed") == 3
    assert delta(decisions, layer="plan", outcome="denied") == 2
    assert delta(decisions, layer="global", outcome="denied") == 0
    stats_flush()
    totals = limiter_stats_get(minutes=2)["totals"]
    for layer in ("global", "plan", "endpoint:conversations", "ip"):
        for outcome in ("allowed", "denied", "near_limit", "shadow_denied"):
            expected = totals.get(layer, {}).get(outcome, 0)
            assert delta(decisions, layer=layer, outcome=outcome) == expected, (layer, outcome)

    # The cache: the profile was computed once and then read from the cache twice; /metrics
    # reports the cache statistics themselves, so both agree exactly.
    assert delta("openspark_cache_misses_total", namespace="user_profile") == 1
    assert delta("openspark_cache_hits_total", namespace="user_profile") == 2
    now = scrape(metrics)
    for namespace in stats_get()["namespaces"]:
        for field in ("hits", "misses", "sets", "errors"):
            metric = f"openspark_cache_{field}_total"
            assert now.value(metric, namespace=namespace["name"]) == namespace[field], metric


def test_queue_depth_of_every_configured_queue(settings):
    queue = f"ostest-metrics-{uuid.uuid4().hex[:8]}"
    settings.INGEST_TASK_QUEUE = queue  # a queue named by settings, consumed by no worker
    try:
        for _ in range(3):
            celery_app.send_task("knowledge_sweep", queue=queue)
        metrics = scrape(Client())
        assert metrics.value("openspark_queue_depth", queue=queue) == 3
        assert metrics.has("openspark_queue_depth", queue=celery_app.conf.task_default_queue)
        assert metrics.value("openspark_broker_up") == 1
    finally:
        with celery_app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)
    assert scrape(Client()).value("openspark_queue_depth", queue=queue) == 0


def test_an_unreachable_broker_is_reported_not_raised():
    original = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    try:
        metrics = scrape(Client())
    finally:
        celery_app.conf.broker_url = original
    assert metrics.value("openspark_broker_up") == 0
    assert not metrics.has("openspark_queue_depth")
    assert metrics.has("openspark_http_requests_total")
