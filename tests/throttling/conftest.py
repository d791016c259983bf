import os
import uuid

import pytest
import redis
from django.conf import settings as django_settings

from openspark.core.state import process_state_reset
from throttling.limiter import limiter_redis


def delete_limiter_keys(prefix: str, url: str | None = None) -> None:
    client = redis.Redis.from_url(url) if url else limiter_redis()
    keys = list(client.scan_iter(match=f"{prefix}:rl:*", count=1000))
    if keys:
        client.delete(*keys)


def _reset_process_state() -> None:
    process_state_reset()  # counters batched for the previous test's prefix included


@pytest.fixture(autouse=True)
def limiter_prefix(settings):
    """Each test's limiter keys live under their own prefix (as Zulip does), so counters never
    leak between tests; the keys are deleted afterwards."""
    prefix = f"{django_settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    url = django_settings.REDIS_URL  # a test may point the limiter at a Redis it then stops
    settings.REDIS_KEY_PREFIX = prefix
    _reset_process_state()
    yield prefix
    _reset_process_state()
    delete_limiter_keys(prefix, url)


@pytest.fixture
def test_urls(settings):
    settings.ROOT_URLCONF = "tests.throttling.urls_for_tests"


@pytest.fixture
def live_limiter_keys():
    """Live servers use the run's prefix (inherited from the environment, not our per-test
    override); clear its limiter keys around the test: user ids repeat after a flush."""
    prefix = os.environ["REDIS_KEY_PREFIX"]
    delete_limiter_keys(prefix)
    yield
    delete_limiter_keys(prefix)
