import time
import uuid

import pytest
from django.conf import settings as django_settings
from django_redis import get_redis_connection

from openspark.core.cache import backend, stats
from openspark.core.cache.keys import login_warm_keys
from tests.live import start_asgi_server, subprocess_env
from throttling.models import Plan


def reset_process_state() -> None:
    backend.health.reset()
    with stats._flush_lock, stats._lock:
        stats._pending.clear()
    # "A login warm-up task is queued" outlives the per-test key cleanup on purpose; a test
    # that scheduled one without a worker must not hold back the next test's login.
    get_redis_connection("default").delete(*login_warm_keys())


@pytest.fixture(autouse=True)
def _cache_state(settings):
    """Fresh per-process cache state (breaker, unflushed stats); the limiter's counters under
    a prefix of their own so a test's many reads are never refused with 429."""
    settings.REDIS_KEY_PREFIX = f"{django_settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    reset_process_state()
    yield
    reset_process_state()


# Replies queued by these tests go to a queue no worker consumes, so no worker races a test
# that asserts on a pending reply.
IDLE_QUEUE = f"ostest-cache-idle-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _idle_chat_queue(settings):
    settings.CHAT_TASK_QUEUE = IDLE_QUEUE


@pytest.fixture(scope="session", autouse=True)
def _drop_idle_queue():
    yield
    client = get_redis_connection("default")
    client.delete(IDLE_QUEUE, f"{django_settings.REDIS_KEY_PREFIX}:{IDLE_QUEUE}")


@pytest.fixture
def redis_raw():
    return get_redis_connection("default")


def unlimited(user) -> None:
    """Live servers share the run's limiter prefix: give the user a plan that never refuses."""
    plan = Plan.objects.get(tier=Plan.Tier.ENTERPRISE)
    plan.requests_per_minute = plan.conversations_per_minute = 1_000_000
    plan.save(update_fields=["requests_per_minute", "conversations_per_minute"])
    user.plan = plan
    user.save(update_fields=["plan"])


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(interval)
    return predicate()


def ns_stats(body: dict, name: str) -> dict:
    return next(ns for ns in body["namespaces"] if ns["name"] == name)


@pytest.fixture(scope="session")
def edge_server(django_db_setup, django_db_blocker, live_logs, milvus_lite):
    """The ASGI server with a limiter configuration snapshot that outlives a test: the edge
    (openspark/edge.py) sends a request on to Django when the snapshot is stale (it cannot
    load one on the event loop), so with the default 2 s a slow test could see Django answer
    where it expects a replay. After a Redis failure it steps aside for 3 s, not 30."""
    server = start_asgi_server(
        live_logs, env=subprocess_env(THROTTLE_CONFIG_TTL="300", CACHE_EDGE_QUIET_SECONDS="3")
    )
    yield server
    server.stop()


def entries_kept() -> set[bytes]:
    """The keys of the responses the edge keeps."""
    return set(get_redis_connection("default").scan_iter("*:e:*", count=1000))
