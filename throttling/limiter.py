"""The one atomic limiter: every rule that applies to a request is checked and consumed in
one Redis round trip (a Lua script called by SHA), all-or-nothing, on Redis's clock. Callers
build the rules (throttling.rules); this module knows nothing of requests.

Redis keys: `<REDIS_KEY_PREFIX>:rl:{rl}:2<t|f|s>:<layer>:<who>` (`2` = state format, the
letter = algorithm, so changing a rule's algorithm starts a fresh state instead of misreading
another one's); the single `{rl}` hash tag keeps all of a request's keys in one Redis Cluster
slot, which a multi-key script requires.

The monitoring counters are not written by the script: each check adds them to the process's
batch (openspark.core.redis.CounterBatch), written once a second.

When Redis cannot be reached (its breaker, openspark.core.redis.Breaker, is open) the
decision comes from a per-process token bucket with the same limits (fail open,
`degraded=True`), or is a refusal for rules configured to fail closed.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from django.conf import settings

from openspark.core.redis import Breaker, CounterBatch, LuaScript, Unavailable, redis_client
from openspark.core.state import on_reset

logger = logging.getLogger(__name__)

ALGORITHM_CODES = {"token_bucket": "t", "sliding_window": "s", "fixed_window": "f"}
_SCRIPT_ALGORITHMS = {"token_bucket": 0, "fixed_window": 1, "sliding_window": 2}  # limiter.lua
_SCRIPT = LuaScript((Path(__file__).parent / "lua" / "limiter.lua").read_text())
STATS_TTL_SECONDS = 3900  # per-minute stats and top-limited keys: an hour and 5 minutes


class Rule(NamedTuple):
    layer: str  # "global", "ip", "plan", "endpoint:<group>" or "rule:<name>"
    who: str  # whose budget: "all", "u:<user id>" or "ip:<address>"
    limit: int
    period: int = 60  # seconds
    algorithm: str = "token_bucket"
    shadow: bool = False
    fail_closed: bool = False


class LayerState(NamedTuple):
    layer: str
    limit: int
    remaining: int
    reset: float  # seconds until the full budget is back
    period: int
    algorithm: str
    shadow: bool
    admits: bool  # whether this rule alone admitted (or, peeking, would admit) the request


class LimitDecision(NamedTuple):
    allowed: bool
    layer: str | None = None  # the refusing layer
    retry_after: float = 0.0  # seconds
    states: tuple[LayerState, ...] = ()
    code: str = "rate_limited"  # or "blocked", "dependency_unavailable"
    degraded: bool = False  # answered without Redis (per-process fallback)
    plan_tier: str = ""  # a refused signed-in caller's plan tier, set by the service

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


def script_sha() -> str:
    """The SHA1 of lua/limiter.lua, the script every check runs."""
    return _SCRIPT.sha


def limiter_redis():
    """The limiter's client: a short timeout, so a slow Redis costs a request little."""
    return redis_client(settings.REDIS_URL, settings.THROTTLE_REDIS_TIMEOUT)


def key_prefix() -> str:
    return f"{settings.REDIS_KEY_PREFIX}:rl:{{rl}}:"


class _LocalBuckets:
    """Per-process token buckets used while Redis is unreachable: the same limits, but each
    process enforces them alone, so N processes admit up to N times the limit (documented)."""

    _MAX_KEYS = 50_000

    def __init__(self) -> None:
        self._levels: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        on_reset(self._levels.clear)

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


breaker = Breaker("limiter", lambda: settings.THROTTLE_REDIS_RETRY_SECONDS)


def latency_bucket(micros: float) -> int:
    """Quarter-octave latency histogram bucket: 4*log2(µs)."""
    return max(0, int(4 * math.log2(max(micros, 1.0))))


def latency_bucket_upper(bucket: int) -> float:
    return 2 ** ((bucket + 1) / 4)


def _signature(rules, reply, near_ratio: float, bucket: int) -> str:
    """One stats field per outcome signature and latency bucket: "a|global,plan!|37" =
    allowed, plan near its limit (< near_ratio left after this request), latency bucket 37;
    "d|global,plan-|37" = refused by plan; "~" = a shadow rule that would have refused.
    selectors._parse_signature splits them back into per-layer counts."""
    allowed = reply[0] == 1
    deny = reply[1]
    parts = []
    for index, rule in enumerate(rules):
        remaining, admits = reply[3 * index + 3], reply[3 * index + 5]
        if admits:
            near = allowed and remaining < rule.limit * near_ratio
            parts.append(rule.layer + "!" if near else rule.layer)
        elif rule.shadow:
            parts.append(rule.layer + "~")
        else:
            parts.append(rule.layer + "-" if index + 1 == deny else rule.layer)
    return f"{'a' if allowed else 'd'}|{','.join(parts)}|{bucket}"


_stats = CounterBatch("limiter-stats")


def stats_flush() -> None:
    """Write this process's batched monitoring counters now."""
    _stats.flush()


def _stats_record(rules: Sequence[Rule], reply: list, who: str, seconds: float) -> None:
    url = settings.REDIS_URL
    prefix = key_prefix()
    minute = int(time.time() // 60)
    field = _signature(
        rules, reply, settings.THROTTLE_NEAR_LIMIT_RATIO, latency_bucket(seconds * 1e6)
    )
    _stats.add(url, f"{prefix}stats:{minute}", field, ttl=STATS_TTL_SECONDS)
    if reply[0] == 0 and who:
        _stats.add_member(url, f"{prefix}top:{minute}", who, ttl=STATS_TTL_SECONDS)


def _rule_arg(rule: Rule) -> bytes:
    # Binary, as limiter.lua unpacks it (struct '<ddBB'): limit, period µs, algorithm, shadow.
    code = _SCRIPT_ALGORITHMS[rule.algorithm]
    return struct.pack("<ddBB", rule.limit, rule.period * 1_000_000, code, rule.shadow)


def script_call(*, rules: Sequence[Rule], peek: bool = False) -> tuple[list[str], list]:
    """The keys and arguments of the one script call that checks `rules` (what
    limiter_consume sends with EVALSHA of `script_sha()`): for tools that measure the script
    itself, such as bench/limiter_script.py."""
    prefix = key_prefix()
    keys = [f"{prefix}2{ALGORITHM_CODES[rule.algorithm]}:{rule.layer}:{rule.who}" for rule in rules]
    return keys, ["p" if peek else "c", *(_rule_arg(rule) for rule in rules)]


def limiter_consume(*, rules: Sequence[Rule], who: str = "", peek: bool = False) -> LimitDecision:
    """Check `rules` together; consume one unit from each only if every enforcing rule admits
    (shadow rules are counted but never refuse). `peek` reads without consuming (and is not
    counted in the stats). `who` is counted in the top-limited set when refused."""
    if not rules:
        return ALLOWED
    keys, args = script_call(rules=rules, peek=peek)
    started = time.perf_counter()
    try:
        reply = breaker.call(lambda: _SCRIPT(limiter_redis(), keys, args))
    except Unavailable:
        return PEEK_UNAVAILABLE if peek else _unavailable(rules)
    if not peek:
        _stats_record(rules, reply, who, time.perf_counter() - started)
    return _decision(rules, reply)


def _decision(rules: Sequence[Rule], reply: list) -> LimitDecision:
    states = tuple(
        LayerState(
            rule.layer,
            rule.limit,
            reply[index],
            reply[index + 1] / 1e6,
            rule.period,
            rule.algorithm,
            rule.shadow,
            reply[index + 2] == 1,
        )
        for index, rule in zip(range(3, 3 + 3 * len(rules), 3), rules, strict=True)
    )
    if reply[0] == 1:
        return LimitDecision(True, states=states)
    return LimitDecision(False, rules[reply[1] - 1].layer, reply[2] / 1e6, states)


def _unavailable(rules: Sequence[Rule]) -> LimitDecision:
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
