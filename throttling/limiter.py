"""The one atomic limiter: every rule that applies to a request is checked and consumed in
one Redis round trip (a Lua script loaded once and called by SHA), all-or-nothing, on Redis's
clock. Callers build the rules (throttling.services); this module knows nothing of requests.

Redis keys: `<REDIS_KEY_PREFIX>:rl:{rl}:<layer>:<who>`; the single `{rl}` hash tag keeps all
of a request's keys in one Redis Cluster slot, which a multi-key script requires.

When Redis cannot be reached the decision comes from a per-process token bucket with the same
limits (fail open, `degraded=True`), or is a refusal for rules configured to fail closed.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import redis
from django.conf import settings

ALGORITHM_CODES = {"token_bucket": "t", "sliding_window": "s", "fixed_window": "f"}
_SCRIPT = (Path(__file__).parent / "lua" / "limiter.lua").read_text()
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Rule:
    layer: str  # "global", "ip", "plan", "endpoint:<group>" or "rule:<name>"
    who: str  # whose budget: "all", "u:<user id>" or "ip:<address>"
    limit: int
    period: int = 60  # seconds
    algorithm: str = "token_bucket"
    shadow: bool = False
    fail_closed: bool = False


class LayerState(NamedTuple):
    # A tuple rather than a frozen dataclass: several are built per request, and tuples are
    # several times cheaper to create.
    layer: str
    limit: int
    remaining: int
    reset: float  # seconds until the full budget is back
    period: int
    algorithm: str
    shadow: bool
    admits: bool  # whether this rule alone admitted (or, peeking, would admit) the request


@dataclass(frozen=True, slots=True)
class LimitDecision:
    allowed: bool
    layer: str | None = None  # the refusing layer
    retry_after: float = 0.0  # seconds
    states: tuple[LayerState, ...] = ()
    code: str = "rate_limited"  # or "blocked", "dependency_unavailable"
    degraded: bool = False  # answered without Redis (per-process fallback)

    def tightest(self) -> LayerState | None:
        """The layer the headers describe: the refusing one, else the least remaining."""
        enforcing = [s for s in self.states if not s.shadow]
        if not enforcing:
            return None
        if self.layer is not None:
            for state in enforcing:
                if state.layer == self.layer:
                    return state
        return min(enforcing, key=lambda s: (s.remaining, s.limit))


ALLOWED = LimitDecision(allowed=True)
PEEK_UNAVAILABLE = LimitDecision(allowed=True, degraded=True)  # no states: Redis is down


class _Backend:
    """redis-py client per URL (settings are read lazily, so tests may point elsewhere)."""

    def __init__(self) -> None:
        self._clients: dict[str, redis.Redis] = {}
        self._lock = threading.Lock()

    def client(self) -> redis.Redis:
        url = settings.REDIS_URL
        client = self._clients.get(url)
        if client is None:
            timeout = settings.THROTTLE_REDIS_TIMEOUT
            with self._lock:
                client = self._clients.setdefault(
                    url,
                    redis.Redis.from_url(
                        url, socket_timeout=timeout, socket_connect_timeout=timeout
                    ),
                )
        return client


_backend = _Backend()


def redis_client() -> redis.Redis:
    return _backend.client()


def key_prefix() -> str:
    return f"{settings.REDIS_KEY_PREFIX}:rl:{{rl}}:"


class _LocalBuckets:
    """Per-process token buckets used while Redis is unreachable: the same limits, but each
    process enforces them alone, so N processes admit up to N times the limit (documented)."""

    _MAX_KEYS = 50_000

    def __init__(self) -> None:
        self._levels: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def consume(self, rules: list[Rule]) -> LimitDecision:
        now = time.monotonic()
        with self._lock:
            if len(self._levels) > self._MAX_KEYS:
                self._levels.clear()
            levels = []
            for rule in rules:
                level, at = self._levels.get(rule.layer + rule.who, (0.0, now))
                levels.append(max(0.0, level - (now - at) * rule.limit / rule.period))
            refusing = [
                (rule, level)
                for rule, level in zip(rules, levels, strict=True)
                if level + 1 > rule.limit and not rule.shadow
            ]
            allowed = not refusing
            states = []
            for rule, level in zip(rules, levels, strict=True):
                admits = level + 1 <= rule.limit
                if allowed and admits:
                    level += 1
                    self._levels[rule.layer + rule.who] = (level, now)
                states.append(
                    LayerState(
                        rule.layer,
                        rule.limit,
                        max(0, math.floor(rule.limit - level)),
                        level * rule.period / rule.limit,
                        rule.period,
                        rule.algorithm,
                        rule.shadow,
                        admits,
                    )
                )
        if allowed:
            return LimitDecision(allowed=True, states=tuple(states), degraded=True)
        rule, level = max(refusing, key=lambda item: item[1] + 1 - item[0].limit)
        return LimitDecision(
            allowed=False,
            layer=rule.layer,
            retry_after=(level + 1 - rule.limit) * rule.period / rule.limit,
            states=tuple(states),
            degraded=True,
        )


_fallback = _LocalBuckets()


class _Health:
    """After a Redis failure, skip Redis for a short while instead of paying a connection
    timeout on every request; the first call after that retries it."""

    def __init__(self) -> None:
        self.down_until = 0.0
        self.last_error = ""

    def is_down(self) -> bool:
        return time.monotonic() < self.down_until

    def mark_down(self, error: Exception) -> None:
        self.down_until = time.monotonic() + settings.THROTTLE_REDIS_RETRY_SECONDS
        self.last_error = f"{type(error).__name__}: {error}"


health = _Health()

# Latency of this process's previous call, reported in the next one's stats field so that
# measuring it costs no extra round trip. Quarter-octave buckets: 4*log2(µs).
_last_latency = threading.local()


def latency_bucket(micros: float) -> int:
    return max(0, int(4 * math.log2(max(micros, 1.0))))


def latency_bucket_upper(bucket: int) -> float:
    return 2 ** ((bucket + 1) / 4)


def limiter_consume(*, rules: list[Rule], who: str = "", peek: bool = False) -> LimitDecision:
    """Check `rules` together; consume one unit from each only if every enforcing rule admits
    (shadow rules are counted but never refuse). `peek` reads without consuming."""
    if not rules:
        return ALLOWED
    if health.is_down():
        return PEEK_UNAVAILABLE if peek else _unavailable(rules)
    prefix = key_prefix()
    minute = int(time.time() // 60)
    keys = [f"{prefix}{rule.layer}:{rule.who}" for rule in rules]
    keys.append(f"{prefix}stats:{minute}")
    keys.append(f"{prefix}top:{minute}")
    args = [
        "p" if peek else "c",
        who,
        getattr(_last_latency, "bucket", ""),
        settings.THROTTLE_NEAR_LIMIT_RATIO,
    ]
    args += [
        f"{r.layer} {r.limit} {r.period * 1_000_000} {ALGORITHM_CODES[r.algorithm]} "
        f"{1 if r.shadow else 0}"
        for r in rules
    ]
    client = _backend.client()
    started = time.perf_counter()
    try:
        try:
            reply = client.evalsha(_SCRIPT_SHA, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            # First call on this server (or after a restart/SCRIPT FLUSH): load once, retry.
            client.script_load(_SCRIPT)
            reply = client.evalsha(_SCRIPT_SHA, len(keys), *keys, *args)
    except redis.exceptions.RedisError as error:
        health.mark_down(error)
        return PEEK_UNAVAILABLE if peek else _unavailable(rules)
    if not peek:
        _last_latency.bucket = latency_bucket((time.perf_counter() - started) * 1e6)
    return _decision_from_reply(rules, reply)


def _decision_from_reply(rules: list[Rule], reply: bytes) -> LimitDecision:
    head, *per_rule = reply.split(b";")
    allowed, deny_index, retry_us = head.split()
    states = []
    for rule, item in zip(rules, per_rule, strict=True):
        remaining, reset_us, admits = item.split()
        states.append(
            LayerState(
                rule.layer,
                rule.limit,
                int(remaining),
                int(reset_us) / 1e6,
                rule.period,
                rule.algorithm,
                rule.shadow,
                admits == b"1",
            )
        )
    if allowed == b"1":
        return LimitDecision(allowed=True, states=tuple(states))
    return LimitDecision(
        allowed=False,
        layer=rules[int(deny_index) - 1].layer,
        retry_after=int(retry_us) / 1e6,
        states=tuple(states),
    )


def _unavailable(rules: list[Rule]) -> LimitDecision:
    for rule in rules:
        if rule.fail_closed and not rule.shadow:
            return LimitDecision(
                allowed=False,
                layer=rule.layer,
                retry_after=settings.THROTTLE_REDIS_RETRY_SECONDS,
                code="dependency_unavailable",
                degraded=True,
            )
    return _fallback.consume(rules)
