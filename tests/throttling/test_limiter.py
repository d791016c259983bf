"""The limiter engine against the real Redis: algorithms, all-or-nothing, shadow rules,
one round trip per check, and the concurrency bound across processes."""

import multiprocessing
import threading
import time

import pytest

from throttling.limiter import (
    Rule,
    limiter_consume,
    limiter_redis,
    script_call,
    script_sha,
    stats_flush,
)
from throttling.selectors import limiter_stats_get

pytestmark = pytest.mark.django_db


def _evalsha_calls() -> int:
    stats = limiter_redis().info("commandstats")
    return stats.get("cmdstat_evalsha", {}).get("calls", 0)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window", "fixed_window"])
def test_each_algorithm_admits_the_limit_then_refuses(algorithm):
    rule = Rule("plan", "u:1", limit=5, period=60, algorithm=algorithm)
    decisions = [limiter_consume(rules=[rule], who="u:1") for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert [d.states[0].remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[5]
    assert refused.layer == "plan" and refused.states[0].remaining == 0
    if algorithm == "token_bucket":
        # One token comes back every period/limit = 12 s (a few ms already refilled).
        assert 11.5 < refused.retry_after <= 12
    elif algorithm == "sliding_window":
        # The first admitted request leaves the window 60 s after it was made.
        assert 59 < refused.retry_after <= 60
    else:
        assert 0 < refused.retry_after <= 60


def test_token_bucket_refills_continuously():
    rule = Rule("plan", "u:2", limit=600, period=60)  # 10 tokens per second
    started = time.monotonic()
    admitted = 0
    while limiter_consume(rules=[rule]).allowed:
        admitted += 1
    assert 600 <= admitted <= 600 + 10 * (time.monotonic() - started) + 1
    refused_at = time.monotonic()
    time.sleep(0.35)
    admitted = sum(limiter_consume(rules=[rule]).allowed for _ in range(10))
    assert 3 <= admitted <= 10 * (time.monotonic() - refused_at) + 1


def test_refused_check_consumes_nothing_from_other_rules():
    tight = Rule("endpoint:knowledge", "u:3", limit=2, algorithm="fixed_window")
    loose = Rule("plan", "u:3", limit=10)
    results = [limiter_consume(rules=[loose, tight]).allowed for _ in range(5)]
    assert results == [True, True, False, False, False]
    # The plan layer paid only for the two admitted requests.
    state = limiter_consume(rules=[loose], peek=True).states[0]
    assert state.remaining == 8


def test_refusal_names_the_layer_with_the_longest_wait():
    a = Rule("a", "x", limit=1, period=60)
    b = Rule("b", "x", limit=1, period=600)
    limiter_consume(rules=[a, b])
    refused = limiter_consume(rules=[a, b])
    assert not refused.allowed and refused.layer == "b"
    assert 590 < refused.retry_after <= 600


def test_shadow_rule_counts_but_never_refuses():
    shadow = Rule("rule:trial", "u:4", limit=2, shadow=True)
    assert all(limiter_consume(rules=[shadow], who="u:4").allowed for _ in range(5))
    stats_flush()
    totals = limiter_stats_get(minutes=2)["totals"]["rule:trial"]
    assert totals["shadow_denied"] == 3
    assert totals["denied"] == 0


def test_peek_consumes_nothing():
    rule = Rule("plan", "u:5", limit=3)
    for _ in range(3):
        assert limiter_consume(rules=[rule], peek=True).states[0].remaining == 3
    assert limiter_consume(rules=[rule]).states[0].remaining == 2


def test_one_round_trip_per_check_and_script_reloaded_after_flush():
    rules = [Rule("global", "all", 10_000), Rule("plan", "u:6", 100),
             Rule("endpoint:messages", "u:6", 120), Rule("rule:x", "u:6", 50)]  # fmt: skip
    limiter_consume(rules=rules)  # the script is loaded
    before = _evalsha_calls()
    for _ in range(10):
        limiter_consume(rules=rules)
    assert _evalsha_calls() - before == 10
    limiter_redis().script_flush()
    assert limiter_consume(rules=rules).allowed  # NOSCRIPT → loaded again, then by SHA


def test_script_call_is_what_a_check_sends():
    """The public call description (bench/limiter_script.py) runs the same check."""
    rules = [Rule("plan", "u:8", 2), Rule("endpoint:messages", "u:8", 5)]
    keys, args = script_call(rules=rules)
    limiter_consume(rules=[Rule("plan", "u:9", 1)])  # the script is loaded
    assert all(key.endswith(f":{rule.layer}:u:8") for key, rule in zip(keys, rules, strict=True))
    reply = limiter_redis().evalsha(script_sha(), len(keys), *keys, *args)
    assert reply[0] == 1
    assert limiter_consume(rules=rules).allowed  # the second of plan's two
    assert not limiter_consume(rules=rules).allowed


def _blast(rules, barrier, attempts, results):
    """One process: 16 threads, each making `attempts` checks; reports admitted counts."""

    def worker(out):
        barrier.wait()
        first = time.time()
        admitted = sum(limiter_consume(rules=rules).allowed for _ in range(attempts))
        out.append((admitted, first, time.time()))

    outs: list = []
    threads = [threading.Thread(target=worker, args=(outs,)) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(outs)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window", "fixed_window"])
def test_eight_processes_of_sixteen_threads_never_exceed_the_bound(algorithm):
    limit = 100
    rule = Rule("plan", "u:concurrent", limit=limit, period=60, algorithm=algorithm)
    # A roomy second rule that must have paid exactly for what the first one admitted.
    witness = Rule("global", "witness", limit=1_000_000, algorithm="sliding_window")
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(8 * 16)
    results = context.Queue()
    window_before = int(limiter_redis().time()[0]) // 60
    processes = [
        context.Process(target=_blast, args=([rule, witness], barrier, 5, results))
        for _ in range(8)
    ]
    for process in processes:
        process.start()
    outs = [item for _ in processes for item in results.get(timeout=120)]
    for process in processes:
        process.join(30)
    window_after = int(limiter_redis().time()[0]) // 60

    admitted = sum(item[0] for item in outs)
    elapsed = max(item[2] for item in outs) - min(item[1] for item in outs)
    assert len(outs) == 128
    if algorithm == "token_bucket":
        # docs/throttling.md: at most limit + limit * t / period in any span of t seconds.
        assert limit <= admitted <= limit + int(limit * elapsed / 60) + 1
    elif algorithm == "sliding_window":
        assert admitted == limit  # exact: never more than `limit` in any 60 s
    else:
        crossed = window_after != window_before
        assert admitted <= (2 * limit if crossed else limit)
        assert admitted >= limit
    witness_state = limiter_consume(rules=[witness], peek=True).states[0]
    assert 1_000_000 - witness_state.remaining == admitted
