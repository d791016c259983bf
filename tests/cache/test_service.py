"""The cache service against the real (test) Redis: values, versions, TTLs, locks."""

import datetime as dt
import decimal
import threading
import time
import uuid

import pytest
from django.db import transaction

from openspark.core.cache import (
    NAMESPACES,
    cache_bump,
    cache_bump_now,
    cache_get_or_set,
    cache_purge,
    cached,
    stats_get,
)
from openspark.core.cache.keys import value_base_key
from openspark.core.cache.namespaces import UnknownNamespace
from openspark.core.cache.serialization import dumps, loads
from tests.cache.conftest import ns_stats

pytestmark = pytest.mark.django_db


def _value_keys(redis_raw, namespace: str) -> list[bytes]:
    base = value_base_key(namespace, "x").rsplit(":", 1)[0]
    return [k for k in redis_raw.keys(f"{base}:*") if not k.endswith(b":lock")]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_each_namespace_stores_with_its_ttl_from_settings(namespace, settings, redis_raw):
    expected = settings.CACHE_TTLS[namespace]
    cache_get_or_set(namespace, key="ttl", compute=lambda: {"n": 1})
    (key,) = _value_keys(redis_raw, namespace)
    assert expected - 2 <= redis_raw.ttl(key) <= expected


def test_plan_ttls_are_the_seed_numbers(settings):
    assert settings.CACHE_TTLS == {
        "user_profile": 3600,
        "user_conversations": 600,
        "conversation_history": 1800,
        "document_content": 3600,
        "ai_response": 86400,
        "retrieval": 600,
        "rate_limit": 60,
        "api_key": 3600,
    }


def test_ttl_override_is_read_at_call_time(settings, redis_raw):
    settings.CACHE_TTLS = {**settings.CACHE_TTLS, "user_profile": 123}
    cache_get_or_set("user_profile", key="override", compute=lambda: 1)
    (key,) = _value_keys(redis_raw, "user_profile")
    assert 121 <= redis_raw.ttl(key) <= 123


def test_values_round_trip_and_big_ones_are_compressed(redis_raw):
    value = {
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        "day": dt.date(2026, 1, 1),
        "price": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=7),
        "text": "你好" * 2000,
        "none": None,
    }
    assert loads(dumps(value)) == value
    assert dumps(value)[:1] == b"z" and len(dumps(value)) < len(value["text"].encode())
    assert dumps({"a": 1})[:1] == b"m"
    assert cache_get_or_set("document_content", key=1, compute=lambda: value) == value
    assert cache_get_or_set("document_content", key=1, compute=lambda: 1 / 0) == value


def test_none_is_cached_like_any_value():
    calls = []
    for _ in range(3):
        cache_get_or_set("retrieval", key="none", compute=lambda: calls.append(1))
    assert len(calls) == 1


def test_bump_invalidates_only_its_scope(django_capture_on_commit_callbacks):
    counts = {"a": 0, "b": 0}

    def compute(name):
        counts[name] += 1
        return counts[name]

    def read(name):
        return cache_get_or_set(
            "user_conversations", key=name, compute=lambda: compute(name), scopes=("user", name)
        )

    assert (read("a"), read("b"), read("a"), read("b")) == (1, 1, 1, 1)
    with django_capture_on_commit_callbacks(execute=True):
        cache_bump(scope=("user", "a"))
    assert (read("a"), read("b")) == (2, 1)


@pytest.mark.django_db(transaction=True)
def test_bump_waits_for_commit_and_is_dropped_on_rollback():
    calls = []

    def read():
        return cache_get_or_set(
            "user_profile",
            key="tx",
            compute=lambda: calls.append(1) or len(calls),
            scopes=("user", "tx"),
        )

    assert read() == 1
    with transaction.atomic():
        cache_bump(scope=("user", "tx"))
        assert read() == 1  # not committed yet: the old value is still the committed truth
    assert read() == 2
    try:
        with transaction.atomic():
            cache_bump(scope=("user", "tx"))
            raise RuntimeError("rollback")
    except RuntimeError:
        pass
    assert read() == 2


def test_version_counter_lost_to_eviction_never_reuses_a_key(redis_raw):
    """A counter that disappears (eviction, expiry) is re-created from Redis' clock, so it
    is larger than any value it had and an old value cannot come back."""
    values = iter(range(100))

    def read():
        return cache_get_or_set(
            "user_profile", key="evict", compute=lambda: next(values), scopes="evict"
        )

    assert read() == 0
    cache_bump_now(scopes=["evict"])
    assert read() == 1
    (counter,) = redis_raw.keys("*v:evict")
    redis_raw.delete(counter)
    assert read() == 2


def test_stampede_one_computer_others_wait(settings):
    """32 concurrent readers of a missing key: the value is computed once."""
    computed = []
    start = threading.Barrier(32)
    results = []

    def compute():
        computed.append(1)
        # A slow query: slower than it takes every reader to arrive (on a loaded 2-core box
        # 32 threads can take more than a fixed 0.3 s to make their first read).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ns_stats(stats_get(), "conversation_history")["misses"] >= 32:
                break
            time.sleep(0.05)
        time.sleep(0.1)
        return {"answer": 42}

    def reader():
        start.wait()
        results.append(cache_get_or_set("conversation_history", key="hot", compute=compute))

    threads = [threading.Thread(target=reader) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(computed) == 1
    assert results == [{"answer": 42}] * 32
    history = ns_stats(stats_get(), "conversation_history")
    assert (history["misses"], history["hits"], history["coalesced"]) == (32, 0, 31)


def test_a_crashed_computer_does_not_block_others(settings):
    """The computer raises: its lock is released, the next reader computes."""
    with pytest.raises(ZeroDivisionError):
        cache_get_or_set("retrieval", key="crash", compute=lambda: 1 / 0)
    assert cache_get_or_set("retrieval", key="crash", compute=lambda: "ok") == "ok"


def test_a_stuck_lock_expires_and_a_waiter_takes_over(settings, redis_raw):
    """A process died holding a key's lock: readers wait, then take over when it expires."""
    settings.CACHE_LOCK_TIMEOUT = 0.3
    # Keys without scopes share the namespace's versions; learn them from a probe value.
    cache_get_or_set("retrieval", key="probe", compute=lambda: 0)
    (probe,) = _value_keys(redis_raw, "retrieval")
    versions = probe.decode().split("|", 1)[1]
    redis_raw.set(f"{value_base_key('retrieval', 'stuck')}|{versions}:lock", "dead", px=300)
    computed = []
    started = time.monotonic()
    value = cache_get_or_set("retrieval", key="stuck", compute=lambda: computed.append(1) or 7)
    assert value == 7 and computed == [1]
    assert 0.25 <= time.monotonic() - started < 3


def test_selector_decorator_is_keyword_only_and_keeps_the_original():
    calls = []

    @cached(
        "user_profile", key=lambda *, user_id: user_id, version_of=lambda *, user_id: ("u", user_id)
    )
    def profile(*, user_id: int) -> dict:
        calls.append(user_id)
        return {"id": user_id}

    assert profile(user_id=1) == profile(user_id=1) == {"id": 1}
    assert calls == [1]
    assert profile.uncached(user_id=1) == {"id": 1}
    with pytest.raises(TypeError):
        profile(1)
    with pytest.raises(UnknownNamespace):
        cached("nope", key=lambda: 1)


def test_caching_off_goes_straight_to_the_database(settings):
    settings.CACHE_ENABLED = False
    calls = []
    for _ in range(3):
        cache_get_or_set("user_profile", key="off", compute=lambda: calls.append(1))
    assert len(calls) == 3
    assert ns_stats(stats_get(), "user_profile")["misses"] == 0


def test_purge_makes_a_namespace_unreachable_and_frees_it(redis_raw):
    calls = []
    cache_get_or_set("document_content", key=1, compute=lambda: calls.append(1))
    cache_get_or_set("retrieval", key=1, compute=lambda: calls.append(2))
    assert cache_purge("document_content") == 1
    assert _value_keys(redis_raw, "document_content") == []
    cache_get_or_set("document_content", key=1, compute=lambda: calls.append(3))
    cache_get_or_set("retrieval", key=1, compute=lambda: calls.append(4))
    assert calls == [1, 2, 3]


def test_memoised_counter_and_stats_keys_follow_a_changed_key_prefix(settings):
    from openspark.core.cache.keys import global_version_key, key_part, stats_key

    before = stats_key("retrieval"), global_version_key()
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": "elsewhere"}}
    after = stats_key("retrieval"), global_version_key()
    assert after != before and all("elsewhere" in key for key in after)
    # Readable keys stay readable; whitespace, "|" or ":" inside a part gets a digest.
    assert key_part(("user", 42)) == "user:42"
    assert key_part("a b").startswith("#") and key_part("a|b").startswith("#")
    assert key_part("a\u3000b").startswith("#")  # ideographic space
