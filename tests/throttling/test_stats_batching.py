"""The check path: monitoring counters batched per process and written once a second
(exact, also across fork), connections (one the server closed is replaced at once, a timeout
is never retried), and per-algorithm state keys."""

import multiprocessing
import time

import pytest
import redis

from openspark.embedded import start_redis
from throttling import limiter
from throttling.limiter import Rule, key_prefix, limiter_consume, limiter_redis, stats_flush
from throttling.selectors import limiter_stats_get

pytestmark = pytest.mark.django_db


def _stats_hash() -> dict:
    minute = int(time.time() // 60)
    client = limiter_redis()
    fields = {}
    for m in (minute - 1, minute):
        for field, count in client.hgetall(f"{key_prefix()}stats:{m}").items():
            fields[field.decode()] = fields.get(field.decode(), 0) + int(count)
    return fields


def test_batched_stats_count_exactly_after_the_flush():
    # A sliding window counts exactly, however slow the machine: 10 admitted, then refused.
    rules = [
        Rule("plan", "u:424242", limit=10, algorithm="sliding_window"),
        Rule("rule:trial", "u:424242", limit=4, shadow=True),
    ]
    decisions = [limiter_consume(rules=rules, who="u:424242") for _ in range(15)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 5
    for _ in range(3):  # peeks are never counted
        limiter_consume(rules=rules, who="u:424242", peek=True)

    stats_flush()
    stats = limiter_stats_get(minutes=2)
    assert stats["totals"]["plan"] == {
        "allowed": 10,
        "denied": 5,
        "near_limit": 1,  # remaining 0 < 10% of 10, on the 10th admitted request
        "shadow_denied": 0,
    }
    # The shadow rule admitted 4 (and was charged for them) and would have refused the other
    # 11: the 6 that plan admitted and the 5 that plan refused.
    assert stats["totals"]["rule:trial"] == {
        "allowed": 4,
        "denied": 0,
        "near_limit": 1,
        "shadow_denied": 11,
    }
    assert stats["top_limited_users"] == [{"user_id": 424242, "username": "", "denied": 5}]
    assert sum(m["requests"]["allowed"] for m in stats["minutes"]) == 10
    assert sum(m["requests"]["denied"] for m in stats["minutes"]) == 5
    assert stats["latency_us"]["count"] == 15  # every counted check reports its latency
    assert 0 < stats["latency_us"]["p50"] <= stats["latency_us"]["p99"]
    # Flushing again adds nothing: each check is written once.
    stats_flush()
    assert limiter_stats_get(minutes=2)["totals"]["plan"]["allowed"] == 10


def test_top_limited_ips_are_counted_per_refusal():
    rule = Rule("ip", "ip:203.0.113.9", limit=2, algorithm="sliding_window")
    results = [limiter_consume(rules=[rule], who="ip:203.0.113.9").allowed for _ in range(5)]
    assert results == [True, True, False, False, False]
    stats_flush()
    stats = limiter_stats_get(minutes=2)
    assert stats["top_limited_ips"] == [{"ip": "203.0.113.9", "denied": 3}]
    assert stats["totals"]["ip"]["denied"] == 3


def test_the_background_thread_writes_the_counters_within_a_second_or_two():
    rule = Rule("plan", "u:background", limit=100)
    for _ in range(7):
        assert limiter_consume(rules=[rule], who="u:background").allowed
    deadline = time.monotonic() + 5 * limiter._stats.interval
    counted = 0
    while time.monotonic() < deadline:
        counted = sum(n for field, n in _stats_hash().items() if "plan" in field)
        if counted == 7:
            break
        time.sleep(0.05)
    assert counted == 7  # written by the flusher thread: no stats_flush() here


def _child_flushes(out):
    out.put(len(limiter._stats.pending()))  # empty: nothing of the parent's is written twice
    stats_flush()  # must not wait on the lock the parent's writer held at the fork
    out.put("flushed")


def test_a_forked_child_does_not_write_the_parents_queued_counters():
    rule = Rule("plan", "u:fork", limit=100)
    for _ in range(6):
        limiter_consume(rules=[rule], who="u:fork")
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_child_flushes, args=(out,))
    # Forked while the parent's writer holds its lock (as a prefork pool may fork mid-write).
    with limiter._stats._flush_lock:
        child.start()
    assert out.get(timeout=30) == 0
    assert out.get(timeout=5) == "flushed"
    child.join(30)
    assert child.exitcode == 0
    stats_flush()
    assert limiter_stats_get(minutes=2)["totals"]["plan"]["allowed"] == 6


@pytest.fixture
def own_redis(settings, tmp_path):
    """A Redis of this test's own: its command counts are this test's alone."""
    service = start_redis(tmp_path / "redis", persist=False)
    settings.REDIS_URL = service.url
    yield redis.Redis.from_url(service.url)
    service.stop()


def test_a_connection_closed_by_the_server_is_replaced_without_failing_open(own_redis):
    rule = Rule("plan", "u:killed", limit=100, algorithm="sliding_window")
    assert not limiter_consume(rules=[rule]).degraded
    own_redis.client_kill_filter(_type="normal", skipme=True)  # the limiter's idle connection
    decision = limiter_consume(rules=[rule])
    assert decision.allowed and not decision.degraded
    assert decision.states[0].remaining == 98  # both checks counted, once each
    assert not limiter.breaker.is_open()


def test_a_timeout_is_not_retried(own_redis, settings):
    """The script may have run: retrying could charge twice. Fail over instead. The timeout
    is real: Redis holds every write (scripts included) for longer than the limiter waits. A
    retry would need a new connection (redis-py drops one that timed out), so none may be
    opened while the check runs."""
    rule = Rule("plan", "u:timeout", limit=100)
    limiter_consume(rules=[rule])
    stats_flush()  # the counters' writer has nothing left to send (it opens connections too)
    connections = own_redis.info("stats")["total_connections_received"]
    own_redis.client_pause(int(settings.THROTTLE_REDIS_TIMEOUT * 1000) + 1000, all=False)
    try:
        decision = limiter_consume(rules=[rule])
        assert own_redis.info("stats")["total_connections_received"] == connections
    finally:
        own_redis.client_unpause()
    assert decision.degraded and decision.allowed  # fail open, per-process bucket
    assert limiter.breaker.is_open()


def test_changing_a_rules_algorithm_starts_a_fresh_state_instead_of_failing():
    for algorithm in ("token_bucket", "sliding_window", "fixed_window", "token_bucket"):
        rule = Rule("endpoint:knowledge", "u:switch", limit=3, algorithm=algorithm)
        decision = limiter_consume(rules=[rule])
        assert decision.allowed and not decision.degraded
    # The first token bucket's state is used again: 2 of its 3 spent.
    assert decision.states[0].remaining == 1


def test_token_bucket_state_expires_when_the_bucket_is_full_again():
    rule = Rule("plan", "u:ttl", limit=100, period=60)  # one token per 600 ms
    for _ in range(3):
        limiter_consume(rules=[rule])
    key = f"{key_prefix()}2t:plan:u:ttl"
    ttl = limiter_redis().pttl(key)
    assert 0 < ttl <= 1_801  # 3 used: full again after 1.8 s (+1 ms), not after the period
    assert len(limiter_redis().get(key)) == 16  # two packed doubles: level, µs timestamp


def test_the_limiter_follows_a_changed_redis_key_prefix(settings):
    rule = Rule("plan", "u:prefix", limit=5)
    limiter_consume(rules=[rule])
    settings.REDIS_KEY_PREFIX = "os-moved"
    try:
        assert limiter_consume(rules=[rule]).states[0].remaining == 4  # a fresh budget
        assert limiter_redis().exists("os-moved:rl:{rl}:2t:plan:u:prefix")
    finally:
        limiter_redis().delete("os-moved:rl:{rl}:2t:plan:u:prefix")
