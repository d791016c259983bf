"""Redis access for the cache: its client, the Lua scripts that make each cache operation
one round trip, and its breaker (the one policy of openspark.core.redis), so a Redis outage
costs one failed call per CACHE_REDIS_RETRY_SECONDS instead of one per request.

Every function here raises `Unavailable` when Redis cannot answer; callers fall back to the
database. Errors are logged once per outage, not once per request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings

from openspark.core.redis import Breaker, LuaScript, Unavailable, redis_client
from openspark.core.state import on_reset

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
READ = LuaScript(
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
STORE = LuaScript(
    """
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
)

# KEYS[1]: a lock. ARGV[1]: the token its holder set.
RELEASE = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)

# KEYS: version counters to read. ARGV[1]: ttl of a counter created here. Returns their values
# (a missing one is created from Redis' clock, as READ does).
VERSIONS = LuaScript(
    _NEW_COUNTER
    + """
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then
    v = new_counter()
    redis.call('SET', k, v, 'EX', ARGV[1])
  end
  out[i] = v
end
return out
"""
)

# KEYS: version counters to move forward. ARGV[1]: ttl of a counter created here.
BUMP = LuaScript(
    _NEW_COUNTER
    + """
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 0 then redis.call('SET', k, new_counter(), 'EX', ARGV[1]) end
  redis.call('INCR', k)
end
return #KEYS
"""
)

__all__ = ["Unavailable"]


def location() -> str:
    return str(settings.CACHES["default"]["LOCATION"])


def client():
    return redis_client(location(), settings.CACHE_REDIS_TIMEOUT)


class _MissedBump:
    """Set when a version bump could not be delivered: until everything is invalidated,
    values cached before that write could be served once Redis is back."""

    pending = False

    def reset(self) -> None:
        self.pending = False


_missed_bump = _MissedBump()
on_reset(_missed_bump.reset)
breaker = Breaker("cache", lambda: settings.CACHE_REDIS_RETRY_SECONDS)


def _guarded(fn: Callable[[], T]) -> T:
    def go() -> T:
        if _missed_bump.pending:
            from .keys import global_version_key

            BUMP(client(), [global_version_key()], [VERSION_TTL])
            _missed_bump.pending = False
            logger.warning("Cache: invalidated every namespace after a missed version bump")
        return fn()

    return breaker.call(go)


def call(fn: Callable[..., T]) -> T:
    """fn(client) through the cache's breaker; `Unavailable` when Redis cannot answer."""
    return _guarded(lambda: fn(client()))


def run(script: LuaScript, keys: list, args: list):
    """One of this module's scripts, in one round trip."""
    return _guarded(lambda: script(client(), keys, args))


def bump_missed() -> None:
    _missed_bump.pending = True
