"""Per-namespace statistics, shared by every process through Redis.

Hits, misses and stores are counted inside the Lua scripts, in the same round trip as the
operation, so they are exact across processes. Latency and errors are measured here and
batched per process (openspark.core.redis.CounterBatch, as the limiter's counters are), then
added to Redis about once a second; `stats_get` writes the calling process's batch first."""

from __future__ import annotations

import contextlib
from collections import Counter

from openspark.core.redis import CounterBatch

from . import backend
from .keys import stats_key
from .namespaces import NAMESPACES, namespace_get

# Upper bounds (µs) of the latency histogram; the last bucket is everything slower.
BUCKETS_US = (100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)

# Version bumps are not per namespace; they are counted under this pseudo-namespace.
_BUMPS = "_bumps"
_TRACKED = (*NAMESPACES, _BUMPS)

_batch = CounterBatch("cache-stats")


def _bucket(us: int) -> str:
    for bound in BUCKETS_US:
        if us <= bound:
            return f"le_{bound}"
    return "le_inf"


def record(namespace: str, field: str, amount: int = 1) -> None:
    _batch.add(backend.location(), stats_key(namespace), field, amount)


def record_latency(namespace: str, seconds: float) -> None:
    us = int(seconds * 1_000_000)
    record(namespace, "latency_us", us)
    record(namespace, "timed_ops")
    record(namespace, _bucket(us))


def record_bump(*, failed: bool) -> None:
    record(_BUMPS, "failed" if failed else "ok")


def flush() -> None:
    """Add this process's batched counts to Redis now (kept for later if Redis is down)."""
    _batch.flush()


def _percentile(counts: dict[str, int], total: int, fraction: float) -> float | None:
    """Upper bound (ms) of the histogram bucket holding the given fraction of operations."""
    if not total:
        return None
    seen = 0
    for bound in (*BUCKETS_US, None):
        seen += counts.get(f"le_{bound if bound else 'inf'}", 0)
        if seen >= fraction * total:
            return bound / 1000 if bound else None
    return None


def _namespace_stats(name: str, raw: dict[str, int]) -> dict:
    hits, misses = raw.get("hits", 0), raw.get("misses", 0)
    timed = raw.get("timed_ops", 0)
    return {
        "name": name,
        "ttl": namespace_get(name).ttl,
        "hits": hits,
        "misses": misses,
        "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "sets": raw.get("sets", 0),
        "stale_sets_skipped": raw.get("stale_sets_skipped", 0),
        "coalesced": raw.get("coalesced", 0),
        "warmed": raw.get("warmed", 0),
        "lock_timeouts": raw.get("lock_timeouts", 0),
        "errors": raw.get("errors", 0),
        "latency_ms_avg": round(raw.get("latency_us", 0) / timed / 1000, 3) if timed else None,
        "latency_ms_p50": _percentile(raw, timed, 0.50),
        "latency_ms_p95": _percentile(raw, timed, 0.95),
    }


_REDIS_FIELDS = {
    "used_memory": int,
    "used_memory_human": str,
    "used_memory_peak_human": str,
    "maxmemory": int,
    "maxmemory_policy": str,
    "evicted_keys": int,
    "expired_keys": int,
    "keyspace_hits": int,
    "keyspace_misses": int,
}


def stats_get() -> dict:
    """Counts per namespace (Redis totals plus what this process has not flushed yet),
    Redis memory and evictions; still answers, from this process alone, when Redis is down."""
    flush()
    return _stats_read()


def _stats_read() -> dict:
    def read(client):
        pipe = client.pipeline(transaction=False)
        for name in _TRACKED:
            pipe.hgetall(stats_key(name))
        pipe.info("memory")
        pipe.info("stats")
        return pipe.execute()

    totals: dict[str, Counter] = {name: Counter() for name in _TRACKED}
    redis_info: dict = {"available": False}
    try:
        *hashes, memory, server_stats = backend.call(read)
    except backend.Unavailable:
        pass
    else:
        for name, raw in zip(_TRACKED, hashes, strict=True):
            totals[name].update({k.decode(): int(v) for k, v in raw.items()})
        info = {**memory, **server_stats}
        redis_info = {"available": True} | {
            field: cast(info[field]) for field, cast in _REDIS_FIELDS.items() if field in info
        }
    names = {stats_key(name): name for name in _TRACKED}
    for _url, _kind, key, field, amount, _ttl in _batch.pending():  # not written: Redis down
        if key in names:
            totals[names[key]][field] += amount
    bumps = totals[_BUMPS]
    return {
        "namespaces": [_namespace_stats(name, totals[name]) for name in NAMESPACES],
        "version_bumps": {"ok": bumps["ok"], "failed": bumps["failed"]},
        "redis": redis_info,
    }


def stats_reset() -> None:
    """Forget counts (Redis and this process); used by the purge of everything and tests."""
    _batch.flush()
    with contextlib.suppress(backend.Unavailable):
        backend.call(lambda client: client.delete(*(stats_key(name) for name in _TRACKED)))
