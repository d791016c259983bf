"""The one atomic limiter: every rule that applies to a request is checked and consumed in
one Redis round trip (a Lua script loaded once and called by SHA), all-or-nothing, on Redis's
clock. Callers build the rules (throttling.services); this module knows nothing of requests.

Redis keys: `<REDIS_KEY_PREFIX>:rl:{rl}:2<t|f|s>:<layer>:<who>` (`2` = state format, the
letter = algorithm, so changing a rule's algorithm starts a fresh state instead of misreading
another one's); the single `{rl}` hash tag keeps all of a request's keys in one Redis Cluster
slot, which a multi-key script requires.

The check is on every API request, so its path is lean (profiled in docs/performance.md): the
command is packed once and sent on a connection of this module's own small stack of idle
connections (no redis-py pool bookkeeping or per-call socket poll), the script returns
integers, and the monitoring counters are batched per process and written by a background
thread once a second (`_Stats`) instead of inside the script.

When Redis cannot be reached the decision comes from a per-process token bucket with the same
limits (fail open, `degraded=True`), or is a refusal for rules configured to fail closed.
"""

from __future__ import annotations

import atexit
import collections
import logging
import math
import os
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from openspark.core.memo import memoised
from openspark.core.redis_raw import ScriptCall, ScriptConnections, script_sha

logger = logging.getLogger(__name__)

ALGORITHM_CODES = {"token_bucket": "t", "sliding_window": "s", "fixed_window": "f"}
_SCRIPT_ALGORITHMS = {"token_bucket": 0, "fixed_window": 1, "sliding_window": 2}  # limiter.lua
_KEY_PARTS = {name: f"2{code}:" for name, code in ALGORITHM_CODES.items()}  # after the prefix
_SCRIPT = (Path(__file__).parent / "lua" / "limiter.lua").read_text()
_SCRIPT_SHA = script_sha(_SCRIPT)
STATS_TTL_SECONDS = 3900  # per-minute stats and top-limited keys: an hour and 5 minutes


class Rule(NamedTuple):
    # A tuple rather than a frozen dataclass: several are built per request, and tuples are
    # several times cheaper to create (profiled: 0.2 µs against 0.8 µs).
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


class LimitDecision(NamedTuple):
    # Immutable and cheap to create, like LayerState (one per check).
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
    """Per Redis URL (settings are read per call, so tests may point elsewhere): a redis-py
    client for everything but the check, and idle connections for the check itself."""

    def __init__(self) -> None:
        self._clients: dict[str, redis.Redis] = {}
        self._lock = threading.Lock()
        self._script = ScriptConnections(self.client)

    @property
    def _idle(self) -> dict[str, list]:
        return self._script._idle

    def client(self, url: str | None = None) -> redis.Redis:
        url = url or settings.REDIS_URL
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

    def evalsha(self, url: str, packed: bytes):
        """`packed`: an EVALSHA of the limiter script in RESP (see `_pack`)."""
        return self._script.evalsha(url, packed, _SCRIPT)

    def evalsha_with(self, url: str, packed: bytes, others):
        """The limiter's call and other scripts' calls (`(packed, script)` pairs), pipelined:
        (limiter reply, other replies); the others' script errors are returned, the
        limiter's raised."""
        reply, *other_replies = self._script.evalsha_many(url, ((packed, _SCRIPT), *others))
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
        return reply, other_replies


_backend = _Backend()


def redis_client() -> redis.Redis:
    return _backend.client()


_target: tuple[str, str] | None = None  # (REDIS_URL, key prefix): read once per check otherwise


def _redis_target() -> tuple[str, str]:
    global _target
    target = _target
    if target is None:
        target = _target = (settings.REDIS_URL, f"{settings.REDIS_KEY_PREFIX}:rl:{{rl}}:")
    return target


@receiver(setting_changed)
def _settings_changed(*, setting: str, **_kwargs) -> None:
    global _target
    if setting in ("REDIS_URL", "REDIS_KEY_PREFIX"):
        _target = None


def key_prefix() -> str:
    return _redis_target()[1]


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
        self.failed_at = -math.inf  # time.monotonic() of the last failure
        self.last_error = ""

    def is_down(self) -> bool:
        return time.monotonic() < self.down_until

    def failed_within(self, seconds: float) -> bool:
        return time.monotonic() - self.failed_at < seconds

    def mark_down(self, error: Exception) -> None:
        self.failed_at = time.monotonic()
        self.down_until = self.failed_at + settings.THROTTLE_REDIS_RETRY_SECONDS
        self.last_error = f"{type(error).__name__}: {error}"


health = _Health()


def latency_bucket(micros: float) -> int:
    """Quarter-octave latency histogram bucket: 4*log2(µs)."""
    return max(0, int(4 * math.log2(max(micros, 1.0))))


def latency_bucket_upper(bucket: int) -> float:
    return 2 ** ((bucket + 1) / 4)


class _Stats:
    """Monitoring counters, batched per process. A check appends one tuple (its rules, the
    script's reply, its latency) to a queue; a daemon thread turns the queue into the
    per-minute counters (stats:<minute> hash, top:<minute> sorted set, see selectors) once a
    second, in one MULTI/EXEC per Redis. The minute is the check's, so counts land in the
    minute they happened in. `limiter_stats_get` flushes this process's queue first; other
    processes' last second shows up within `INTERVAL`. A flush that fails (Redis down) drops
    its counts, as checks answered without Redis are not counted either. After fork, the
    child starts with an empty queue (the parent counts its own)."""

    INTERVAL = 1.0

    def __init__(self) -> None:
        self.queue: collections.deque = collections.deque()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._failing = False

    def record(self, item: tuple) -> None:
        self.queue.append(item)  # deque.append is atomic: no lock on the request path
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="throttle-stats", daemon=True)
                self._thread = thread
                thread.start()

    def _run(self) -> None:
        me = threading.current_thread()
        while self._thread is me:
            time.sleep(self.INTERVAL)
            try:
                self.flush()
            except Exception:  # never let the flusher die
                logger.exception("Rate limiter stats flush failed")

    def flush(self) -> None:
        """Write every queued check's counters now (thread-safe; exact: each check once)."""
        with self._flush_lock:
            queue = self.queue
            items = [queue.popleft() for _ in range(len(queue))]
            if not items:
                return
            near_ratio = settings.THROTTLE_NEAR_LIMIT_RATIO
            per_url: dict[str, tuple[dict, dict]] = {}
            for url, prefix, minute, rules, reply, who, seconds in items:
                counters, top = per_url.setdefault(url, ({}, {}))
                field = _signature(rules, reply, near_ratio, latency_bucket(seconds * 1e6))
                key = (f"{prefix}stats:{minute}", field)
                counters[key] = counters.get(key, 0) + 1
                if reply[0] == 0 and who:
                    key = (f"{prefix}top:{minute}", who)
                    top[key] = top.get(key, 0) + 1
            for url, (counters, top) in per_url.items():
                self._write(url, counters, top)

    def _write(self, url: str, counters: dict, top: dict) -> None:
        try:
            pipe = _backend.client(url).pipeline(transaction=True)
            for (key, field), count in counters.items():
                pipe.hincrby(key, field, count)
            for (key, who), count in top.items():
                pipe.zincrby(key, count, who)
            for key in {key for key, _field in counters} | {key for key, _who in top}:
                pipe.expire(key, STATS_TTL_SECONDS)
            pipe.execute()
        except redis.exceptions.RedisError as error:
            if not self._failing:
                name = type(error).__name__
                logger.warning("Rate limiter stats not written (%s: %s)", name, error)
            self._failing = True
        else:
            self._failing = False

    def forget_after_fork(self) -> None:
        self.queue = collections.deque()
        self._thread = None
        self._start_lock = threading.Lock()
        self._flush_lock = threading.Lock()


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


_stats = _Stats()
os.register_at_fork(after_in_child=_stats.forget_after_fork)
atexit.register(_stats.flush)


def stats_flush() -> None:
    """Write this process's queued monitoring counters now (the stats API calls this)."""
    _stats.flush()


# RESP packing of the script call, by hand: cheaper than redis-py's or hiredis's packer for
# this one command (profiled: ~1 µs against ~4 µs). The same callers come back with the same
# rules (memoised per configuration snapshot, see services), so whole calls are packed once.
_MODE_ARG = {False: b"$1\r\nc\r\n", True: b"$1\r\np\r\n"}
_packed_calls: dict[tuple, bytes] = {}


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _rule_arg(rule: Rule) -> bytes:
    # Binary, as limiter.lua unpacks it: parsing numbers from text costs the script more.
    code = _SCRIPT_ALGORITHMS[rule.algorithm]
    return _bulk(struct.pack("<ddBB", rule.limit, rule.period * 1_000_000, code, rule.shadow))


def _pack_new(prefix: str, rules: Sequence[Rule], peek: bool) -> bytes:
    # EVALSHA sha numkeys key*n mode rule*n
    head = [b"*%d\r\n" % (4 + 2 * len(rules)), _bulk(b"EVALSHA"), _bulk(_SCRIPT_SHA.encode())]
    keys = [
        _bulk(f"{prefix}{_KEY_PARTS[rule.algorithm]}{rule.layer}:{rule.who}".encode())
        for rule in rules
    ]
    args = [_rule_arg(rule) for rule in rules]
    return b"".join([*head, _bulk(b"%d" % len(rules)), *keys, _MODE_ARG[peek], *args])


def _pack(prefix: str, rules: Sequence[Rule], peek: bool) -> bytes:
    key = (prefix, peek, rules if type(rules) is tuple else tuple(rules))
    # Bounded: callers' identities are not.
    return memoised(_packed_calls, key, lambda: _pack_new(prefix, rules, peek), limit=20_000)


def limiter_consume(
    *, rules: Sequence[Rule], who: str = "", peek: bool = False, also=()
) -> LimitDecision:
    """Check `rules` together; consume one unit from each only if every enforcing rule admits
    (shadow rules are counted but never refuse). `peek` reads without consuming (and is not
    counted in the stats). `who` is counted in the top-limited set when refused.

    `also`: other script calls (`ScriptCall`s) sent in the same round trip when they go to
    the same Redis; each raw reply is put in its `reply` (left alone when it could not be
    sent)."""
    if not rules:
        return ALLOWED
    if health.down_until and health.is_down():
        return PEEK_UNAVAILABLE if peek else _unavailable(rules)
    url, prefix = _redis_target()
    packed = _pack(prefix, rules, peek)
    started = time.perf_counter()
    try:
        riders = [other for other in also if other.url == url] if also else None
        if riders:
            reply, replies = _backend.evalsha_with(
                url, packed, [(other.packed, other.script) for other in riders]
            )
            for other, other_reply in zip(riders, replies, strict=True):
                other.reply = other_reply
        else:
            reply = _backend.evalsha(url, packed)
    except redis.exceptions.RedisError as error:
        health.mark_down(error)
        return PEEK_UNAVAILABLE if peek else _unavailable(rules)
    if not peek:
        elapsed = time.perf_counter() - started
        _stats.record((url, prefix, int(time.time() // 60), rules, reply, who, elapsed))
    return _decision(rules, reply)


_new_tuple = tuple.__new__  # NamedTuples made without their Python-level __new__ (~0.2 µs each)


def _decision(rules: Sequence[Rule], reply: list) -> LimitDecision:
    states = tuple(
        [
            _new_tuple(
                LayerState,
                (
                    rule.layer,
                    rule.limit,
                    reply[index],
                    reply[index + 1] / 1e6,
                    rule.period,
                    rule.algorithm,
                    rule.shadow,
                    reply[index + 2] == 1,
                ),
            )
            for index, rule in zip(range(3, 3 + 3 * len(rules), 3), rules, strict=True)
        ]
    )
    if reply[0] == 1:
        return _new_tuple(LimitDecision, (True, None, 0.0, states, "rate_limited", False))
    return LimitDecision(False, rules[reply[1] - 1].layer, reply[2] / 1e6, states)


@dataclass(slots=True)
class PeekRead(ScriptCall):
    """A peek packed to ride another call's round trip (`limiter_consume(also=…)`); sent after
    that call's check, so it sees the budget the check left."""

    rules: Sequence[Rule] = ()


def limiter_peek_prefetch(rules: list[Rule]) -> PeekRead | None:
    if not rules or (health.down_until and health.is_down()):
        return None
    url, prefix = _redis_target()
    return PeekRead(url, _pack(prefix, rules, True), _SCRIPT, rules=rules)


def limiter_peek_result(read: PeekRead | None) -> LimitDecision | None:
    """The peek's states, or None when it was not answered."""
    if read is None or not isinstance(read.reply, list):
        return None
    return _decision(read.rules, read.reply)


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
