import time
import uuid

import pytest
from django.conf import settings as django_settings
from django_redis import get_redis_connection

from openspark.core.cache.keys import login_warm_keys
from openspark.core.state import process_state_reset
from throttling.models import Plan


def reset_process_state() -> None:
    process_state_reset()
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
