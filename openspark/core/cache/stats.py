"""Per-namespace statistics, shared by every process through Redis.

Hits, misses and stores are counted inside the Lua scripts, in the same round trip as the
operation, so they are exact across processes. Latency and errors are measured here and
buffered per process, then added to Redis at most once a second (errors can only be counted
locally while Redis is down); `stats_get` flushes the calling process first."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter, defaultdict

from . import backend
from .keys import stats_key
from .namespaces import NAMESPACES, namespace_get

# Upper bounds (µs) of the latency histogram; the last bucket is everything slower.
BUCKETS_US = (100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)
_FLUSH_EVERY = 1.0

_lock = threading.Lock()
# Held for a whole flush (and by stats_get), so a batch on its way to Redis is never missing
# from both the buffer and Redis while someone reads the totals.
_flush_lock = threading.RLock()
_pending: dict[str, Counter] = defaultdict(Counter)
_flushed_at = 0.0
# Version bumps are not per namespace; they are counted under this pseudo-namespace.
_BUMPS = "_bumps"
_TRACKED = (*NAMESPACES, _BUMPS)


def _bucket(us: int) -> str:
    for bound in BUCKETS_US:
        if us <= bound:
            return f"le_{bound}"
    return "le_inf"


_flusher_pid = 0


def _ensure_flusher() -> None:
    """A daemon thread per process adds buffered counts to Redis every second, so the last
    requests before a quiet period are not left unflushed. Started lazily (after a fork the
    child starts its own)."""
    global _flusher_pid
    if _flusher_pid == os.getpid():
        return
    _flusher_pid = os.getpid()

    def loop():
        while True:
            time.sleep(_FLUSH_EVERY)
            if _pending:
                flush(force=True)

    threading.Thread(target=loop, name="cache-stats-flusher", daemon=True).start()


def record_latency(namespace: str, seconds: float) -> None:
    us = int(seconds * 1_000_000)
    _ensure_flusher()
    with _lock:
        counter = _pending[namespace]
        counter["latency_us"] += us
        counter["timed_ops"] += 1
        counter[_bucket(us)] += 1


def record(namespace: str, field: str, amount: int = 1) -> None:
    _ensure_flusher()
    with _lock:
        _pending[namespace][field] += amount


def record_bump(*, failed: bool) -> None:
    record(_BUMPS, "failed" if failed else "ok")


def flush(*, force: bool = False) -> None:
    """Add this process's buffered counts to Redis; kept for later if Redis is down."""
    global _flushed_at
    now = time.monotonic()
    if not force and now - _flushed_at < _FLUSH_EVERY:
        return
    with _flush_lock:
        with _lock:
            _flushed_at = now
            batch = {ns: counter for ns, counter in _pending.items() if counter}
            _pending.clear()
        if not batch:
            return

        def write(client):
            pipe = client.pipeline(transaction=False)
            for namespace, counter in batch.items():
                for field, amount in counter.items():
                    pipe.hincrby(stats_key(namespace), field, amount)
            pipe.execute()

        try:
            backend.call(write)
        except backend.Unavailable:
            with _lock:
                for namespace, counter in batch.items():
                    _pending[namespace].update(counter)


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
    with _flush_lock:
        flush(force=True)
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
    with _lock:
        for name, counter in _pending.items():
            totals.setdefault(name, Counter()).update(counter)
    bumps = totals[_BUMPS]
    return {
        "namespaces": [_namespace_stats(name, totals[name]) for name in NAMESPACES],
        "version_bumps": {"ok": bumps["ok"], "failed": bumps["failed"]},
        "redis": redis_info,
    }


def stats_reset() -> None:
    """Forget counts (Redis and this process); used by the purge of everything and tests."""
    with _lock:
        _pending.clear()
    with contextlib.suppress(backend.Unavailable):
        backend.call(lambda client: client.delete(*(stats_key(name) for name in _TRACKED)))
