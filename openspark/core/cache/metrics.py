"""The cache's statistics as Prometheus metrics: the very numbers `GET /api/v1/cache/stats/` and
/admin/cache/ show (`stats.stats_get`), read from Redis at scrape time. They are fleet-wide
(every process counts into Redis), so each web server reports the same values; a purge of
everything resets them, which Prometheus' rate() treats as a counter reset."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .stats import stats_get

_COUNTERS = {
    "hits": "Cache reads answered from Redis.",
    "misses": "Cache reads that computed the value.",
    "sets": "Values stored.",
    "stale_sets_skipped": "Stores skipped because a version moved during the compute.",
    "coalesced": "Reads that waited for another process's compute instead of computing.",
    "warmed": "Values computed by warm-up jobs.",
    "lock_timeouts": "Waits that gave up on another process's compute lock.",
    "errors": "Cache calls that failed on Redis (answered from the database).",
}


class CacheStatsCollector:
    def collect(self):
        stats = stats_get()
        for field, documentation in _COUNTERS.items():
            family = CounterMetricFamily(
                f"openspark_cache_{field}", documentation, labels=["namespace"]
            )
            for namespace in stats["namespaces"]:
                family.add_metric([namespace["name"]], namespace[field])
            yield family
        bumps = CounterMetricFamily(
            "openspark_cache_version_bumps", "Version counter bumps.", labels=["result"]
        )
        for result in ("ok", "failed"):
            bumps.add_metric([result], stats["version_bumps"][result])
        yield bumps
        redis = stats["redis"]
        up = GaugeMetricFamily("openspark_cache_redis_up", "1 if the cache's Redis answered.")
        up.add_metric([], 1 if redis["available"] else 0)
        yield up
        if "used_memory" in redis:
            memory = GaugeMetricFamily("openspark_redis_memory_used_bytes", "Redis used_memory.")
            memory.add_metric([], redis["used_memory"])
            yield memory
        if "evicted_keys" in redis:
            evicted = CounterMetricFamily(
                "openspark_redis_evicted_keys", "Keys Redis evicted for lack of memory."
            )
            evicted.add_metric([], redis["evicted_keys"])
            yield evicted
