"""Redis access for the cache: the raw django-redis client, the Lua scripts that make each
cache operation one round trip, and a breaker so a Redis outage costs one failed call per
CACHE_REDIS_RETRY_SECONDS instead of one per request.

Every function here raises `Unavailable` when Redis cannot answer; callers fall back to the
database. Errors are logged once per outage, not once per request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from openspark.core.redis_raw import (
    ScriptCall,
    ScriptConnections,
    pack_command,
    script_sha,
)

logger = logging.getLogger("openspark.cache")

T = TypeVar("T")

# Version counters outlive any value (24 h at most); when one expires or is evicted it is
# re-created from Redis' clock, which is larger than any value it had, so no key is reused.
VERSION_TTL = 7 * 24 * 3600

# Lua 5.1 prints large numbers in exponent form, so a new counter is built as a string:
# seconds followed by six digits of microseconds.
_NEW_COUNTER = """
local function new_counter()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
if redis.replicate_commands then redis.replicate_commands() end
"""

# KEYS: n version counters, stats hash, hot set.
# ARGV: base key, n, count (1/0), lock ms (0 = no lock), lock token, hot member, counter ttl.
# Returns {hit, full key, value or lock-acquired flag, versions}.
READ = (
    _NEW_COUNTER
    + """
local n = tonumber(ARGV[2])
local parts = {}
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  if not v then
    v = new_counter()
    redis.call('SET', KEYS[i], v, 'EX', ARGV[7])
  end
  parts[i] = v
end
local versions = table.concat(parts, '.')
local key = ARGV[1] .. '|' .. versions
if ARGV[6] ~= '' then redis.call('ZINCRBY', KEYS[n + 2], 1, ARGV[6]) end
local value = redis.call('GET', key)
if value then
  if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[n + 1], 'hits', 1) end
  return {1, key, value, versions}
end
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[n + 1], 'misses', 1) end
local locked = 0
if ARGV[4] ~= '0' and redis.call('SET', key .. ':lock', ARGV[5], 'NX', 'PX', ARGV[4]) then
  locked = 1
end
return {0, key, locked, versions}
"""
)

# KEYS: n version counters, stats hash. ARGV: n, versions read, full key, value, ttl, token.
# Stores only if no counter moved since the read: a value computed before a write committed
# would otherwise sit (unreachable, but using memory) under the old versions.
STORE = """
local n = tonumber(ARGV[1])
local parts = {}
for i = 1, n do parts[i] = redis.call('GET', KEYS[i]) or '' end
local stored = 0
if table.concat(parts, '.') == ARGV[2] then
  redis.call('SET', ARGV[3], ARGV[4], 'EX', ARGV[5])
  redis.call('HINCRBY', KEYS[n + 1], 'sets', 1)
  stored = 1
else
  redis.call('HINCRBY', KEYS[n + 1], 'stale_sets_skipped', 1)
end
if ARGV[6] ~= '' and redis.call('GET', ARGV[3] .. ':lock') == ARGV[6] then
  redis.call('DEL', ARGV[3] .. ':lock')
end
return stored
"""

# KEYS[1]: a lock. ARGV[1]: the token its holder set.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: version counters to move forward. ARGV[1]: ttl of a counter created here.
BUMP = (
    _NEW_COUNTER
    + """
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 0 then redis.call('SET', k, new_counter(), 'EX', ARGV[1]) end
  redis.call('INCR', k)
end
return #KEYS
"""
)

# Whole responses replayed ahead of Django (edge.py). An entry is a hash: `v` the versions its
# reads saw, `k` their counters' keys (newline-separated), `s` its namespace's stats key, `n`
# the namespace, `h` the response headers, `b` the body, `l` the name of its live part ('' if
# none), `y` the request headers it was made for.
# KEYS[1]: the entry. ARGV[1]: the request's headers (as `y`). Returns {1, headers, body,
# namespace, live part} (and counts a hit) when the headers match and every counter still
# holds the value its reads saw, else {0}; a miss is not counted here (the view's own read
# counts it).
EDGE_READ = """
local e = redis.call('HMGET', KEYS[1], 'v', 'k', 's', 'n', 'h', 'b', 'l', 'y')
if not e[1] or e[8] ~= ARGV[1] then return {0} end
local parts = {}
local i = 0
for k in string.gmatch(e[2], '[^\\n]+') do
  i = i + 1
  parts[i] = redis.call('GET', k) or ''
end
if table.concat(parts, '.') ~= e[1] then return {0} end
redis.call('HINCRBY', e[3], 'hits', 1)
return {1, e[5], e[6], e[4], e[7]}
"""

# KEYS: n counters. ARGV: n, the versions the response's reads saw, entry key, ttl, stats key,
# namespace, headers, body, live part, request headers. Stores only if no counter moved since
# those reads (as STORE).
EDGE_STORE = """
local n = tonumber(ARGV[1])
local parts = {}
for i = 1, n do parts[i] = redis.call('GET', KEYS[i]) or '' end
if table.concat(parts, '.') ~= ARGV[2] then return 0 end
redis.call('HSET', ARGV[3], 'v', ARGV[2], 'k', table.concat(KEYS, '\\n'), 's', ARGV[5],
  'n', ARGV[6], 'h', ARGV[7], 'b', ARGV[8], 'l', ARGV[9], 'y', ARGV[10])
redis.call('EXPIRE', ARGV[3], ARGV[4])
return 1
"""

_SHAS = {src: script_sha(src) for src in (READ, STORE, RELEASE, BUMP, EDGE_READ, EDGE_STORE)}


# A read packed for the rate limiter's round trip (see ScriptCall).
Prefetch = ScriptCall


class Unavailable(Exception):
    """Redis did not answer (or the breaker is open); use the database."""


class _Health:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.down = False
        # Set when a version bump could not be delivered: until everything is invalidated,
        # values cached before that write could be served once Redis is back.
        self.invalidate_all = False

    def reset(self) -> None:
        with self.lock:
            self.down_until = 0.0
            self.down = False
            self.invalidate_all = False


health = _Health()


def _failed(exc: BaseException) -> None:
    with health.lock:
        health.down_until = time.monotonic() + settings.CACHE_REDIS_RETRY_SECONDS
        first = not health.down
        health.down = True
    if first:
        logger.warning("Cache: Redis unavailable, reading from the database (%s)", exc)


def _recovered() -> None:
    with health.lock:
        was_down, health.down = health.down, False
        invalidate = health.invalidate_all
    if was_down:
        logger.warning("Cache: Redis reachable again")
    if invalidate:
        from .keys import global_version_key

        _evalsha(BUMP, [global_version_key()], [VERSION_TTL])
        with health.lock:
            health.invalidate_all = False
        logger.warning("Cache: invalidated every namespace after a missed version bump")


def _guarded(fn: Callable[[], T]) -> T:
    """Run fn() against Redis; raise Unavailable on any Redis or socket failure."""
    if time.monotonic() < health.down_until:
        raise Unavailable("breaker open")
    try:
        if health.down or health.invalidate_all:
            _recovered()
        return fn()
    except (RedisError, OSError) as exc:
        _failed(exc)
        raise Unavailable(str(exc)) from exc


def call(fn: Callable[..., T]) -> T:
    """Run fn(client) with the django-redis client; raise Unavailable as `run` does."""
    return _guarded(lambda: fn(get_redis_connection("default")))


# The scripts run on every cached read: sent on idle connections of the django-redis
# client's settings, packed by hand, without redis-py's per-call bookkeeping (see redis_raw).
_scripts = ScriptConnections(lambda _url: get_redis_connection("default"))


def location() -> str:
    # Connections are keyed by it, so a changed setting never reuses another server's.
    return str(settings.CACHES["default"]["LOCATION"])


def pack(src: str, keys: list, args: list) -> bytes:
    return pack_command("EVALSHA", _SHAS[src], len(keys), *keys, *args)


def healthy() -> bool:
    """Up, breaker closed, nothing to recover: a read may go out on another module's round
    trip (the recovery steps of `_guarded` run only on this module's own calls)."""
    return not (health.down or health.invalidate_all) and time.monotonic() >= health.down_until


def _evalsha(src: str, keys: list, args: list):
    return _scripts.evalsha(location(), pack(src, keys, args), src)


def run(src: str, keys: list, args: list):
    """One of this module's scripts, in one round trip."""
    return _guarded(lambda: _evalsha(src, keys, args))


def bump_missed() -> None:
    with health.lock:
        health.invalidate_all = True
