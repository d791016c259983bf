"""get-or-set with stampede protection: one process computes a missing value, the others
wait for it (never for longer than CACHE_LOCK_TIMEOUT) instead of all hitting the database.
A waiter never gets an older value than the versions it read, so waiting cannot serve a
stale read."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings

from . import backend, stats
from .keys import (
    Scope,
    hot_key,
    namespace_pattern,
    scopes_normalize,
    stats_key,
    value_base_key,
    version_keys,
)
from .namespaces import RATE_LIMIT, namespace_get
from .serialization import dumps, loads
from .versions import namespace_bump

logger = logging.getLogger("openspark.cache")

T = TypeVar("T")

_WAIT_FIRST = 0.005
_WAIT_MAX = 0.05


@dataclass
class _Lookup:
    hit: bool
    key: str
    value: bytes | None
    locked: bool
    versions: str


# Warm-up reads are not requests: they are counted as "warmed", not as hits or misses.
_warming = contextvars.ContextVar("cache_warming", default=False)


def cache_enabled() -> bool:
    return bool(settings.CACHE_ENABLED)


@contextlib.contextmanager
def warming() -> Iterator[None]:
    reset = _warming.set(True)
    try:
        yield
    finally:
        _warming.reset(reset)


def _lookup(
    namespace: str,
    base: str,
    vkeys: list[str],
    *,
    count: bool,
    lock_ms: int,
    token: str,
    hot: str | None,
) -> _Lookup:
    started = time.perf_counter()
    reply = backend.run(
        backend.READ,
        [*vkeys, stats_key(namespace), hot_key(namespace)],
        [base, len(vkeys), int(count), lock_ms, token, hot or "", backend.VERSION_TTL],
    )
    if count:
        stats.record_latency(namespace, time.perf_counter() - started)
    hit, key, payload, versions = reply
    return _Lookup(
        hit=bool(hit),
        key=key.decode(),
        value=payload if hit else None,
        locked=not hit and bool(payload),
        versions=versions.decode(),
    )


def _store(
    namespace: str, found: _Lookup, vkeys: list[str], data: bytes, ttl: int, token: str
) -> None:
    try:
        backend.run(
            backend.STORE,
            [*vkeys, stats_key(namespace)],
            [len(vkeys), found.versions, found.key, data, ttl, token],
        )
    except backend.Unavailable:
        stats.record(namespace, "errors")


def _release(key: str, token: str) -> None:
    # If Redis is gone the lock simply expires.
    with contextlib.suppress(backend.Unavailable):
        backend.run(backend.RELEASE, [f"{key}:lock"], [token])


def cache_get_or_set(
    namespace: str,
    *,
    key,
    compute: Callable[[], T],
    scopes: Scope | Iterable[Scope] = (),
    hot: str | None = None,
) -> T:
    """The cached value of `key` in `namespace` under the current versions of `scopes`, or
    compute() stored for the namespace's TTL. Falls back to compute() when caching is off or
    Redis is unavailable. The value returned is always the decoded cached form, so a hit and
    a miss give identical types (tuples become lists)."""
    return cache_get_or_set_versioned(namespace, key=key, compute=compute, scopes=scopes, hot=hot)[
        0
    ]


def cache_get_or_set_versioned(
    namespace: str,
    *,
    key,
    compute: Callable[[], T],
    scopes: Scope | Iterable[Scope] = (),
    hot: str | None = None,
) -> tuple[T, str | None]:
    """`cache_get_or_set`, and the versions the value is valid for (None when it came from
    around the cache: caching off, Redis down): what an HTTP validator can be made of."""
    if not cache_enabled():
        return compute(), None
    ns = namespace_get(namespace)
    vkeys = version_keys(ns.name, scopes_normalize(scopes))
    return _get_or_set(ns, key, compute, vkeys, hot)


def cache_versions_get(namespace: str, *, scopes: Scope | Iterable[Scope] = ()) -> str | None:
    """The current versions of a namespace and scopes, as `cache_get_or_set_versioned` gives
    them for a value read now; None when unknown (caching off, Redis down, a counter not made
    yet). One round trip, no value read."""
    if not cache_enabled():
        return None
    vkeys = version_keys(namespace_get(namespace).name, scopes_normalize(scopes))
    try:
        values = backend.call(lambda client: client.mget(vkeys))
    except backend.Unavailable:
        return None
    if any(value is None for value in values):
        return None
    return ".".join(value.decode() for value in values)


def _get_or_set(ns, key, compute: Callable[[], T], vkeys: list[str], hot) -> tuple[T, str | None]:
    """(value, the versions it is valid for; None when it came from around the cache)."""
    base = value_base_key(ns.name, key)
    token = secrets.token_hex(8)
    lock_ms = int(settings.CACHE_LOCK_TIMEOUT * 1000)
    count = not _warming.get()
    if not count:
        stats.record(ns.name, "warmed")
    try:
        found = _lookup(
            ns.name,
            base,
            vkeys,
            count=count,
            lock_ms=lock_ms,
            token=token,
            hot=hot if count else None,
        )
    except backend.Unavailable:
        stats.record(ns.name, "errors")
        return compute(), None

    waited = False
    deadline = time.monotonic() + settings.CACHE_LOCK_TIMEOUT + 1
    delay = _WAIT_FIRST
    while True:
        if found.hit:
            try:
                value = loads(found.value)
            except Exception:  # a value written by an incompatible release: recompute
                logger.exception("Cache: undecodable value under %s", found.key)
                stats.record(ns.name, "errors")
                return compute(), None
            if waited:
                stats.record(ns.name, "coalesced")
            return value, found.versions
        if found.locked:
            value = _compute_and_store(ns.name, found, vkeys, compute, ns.ttl, token)
            return value, found.versions
        if time.monotonic() > deadline:
            # The computing process is stuck or died holding a lock that has not expired yet.
            stats.record(ns.name, "lock_timeouts")
            return compute(), None
        time.sleep(delay)
        delay = min(delay * 2, _WAIT_MAX)
        waited = True
        try:
            found = _lookup(
                ns.name, base, vkeys, count=False, lock_ms=lock_ms, token=token, hot=None
            )
        except backend.Unavailable:
            stats.record(ns.name, "errors")
            return compute(), None


def _compute_and_store(
    namespace: str, found: _Lookup, vkeys: list[str], compute: Callable[[], T], ttl: int, token: str
) -> T:
    try:
        data = dumps(compute())
    except BaseException:
        _release(found.key, token)
        raise
    _store(namespace, found, vkeys, data, ttl, token)
    return loads(data)


# What a read saw (its versions and full key): a value made after the read and stored with
# `cache_value_set(seen=…)` is stored only if no version moved since, so a value loaded from
# the database just before a write committed is never kept under the write's versions.
Seen = _Lookup


def cache_value_read(
    namespace: str, *, key, scopes: Scope | Iterable[Scope] = ()
) -> tuple[object, Seen | None]:
    """A plain read (no compute, no lock): (the value or None, what it saw). Counted as a hit
    or a miss."""
    if not cache_enabled():
        return None, None
    ns = namespace_get(namespace)
    vkeys = version_keys(ns.name, scopes_normalize(scopes))
    try:
        found = _lookup(
            ns.name, value_base_key(ns.name, key), vkeys, count=True, lock_ms=0, token="", hot=None
        )
    except backend.Unavailable:
        stats.record(ns.name, "errors")
        return None, None
    return (loads(found.value) if found.hit else None), found


def cache_value_get(namespace: str, *, key, scopes: Scope | Iterable[Scope] = ()):
    """A plain read (no compute, no lock): the value or None. Counted as a hit or a miss."""
    return cache_value_read(namespace, key=key, scopes=scopes)[0]


def cache_value_set(
    namespace: str,
    *,
    key,
    value,
    scopes: Scope | Iterable[Scope] = (),
    seen: Seen | None = None,
) -> None:
    """Store a value computed elsewhere (e.g. a model's reply) for the namespace's TTL.
    `seen`: the read the value was made after (see `Seen`); without it the value is stored
    under the current versions."""
    if not cache_enabled():
        return
    ns = namespace_get(namespace)
    vkeys = version_keys(ns.name, scopes_normalize(scopes))
    if seen is None:
        try:
            # A read without counting gives the key for the current versions.
            seen = _lookup(
                ns.name,
                value_base_key(ns.name, key),
                vkeys,
                count=False,
                lock_ms=0,
                token="",
                hot=None,
            )
        except backend.Unavailable:
            stats.record(ns.name, "errors")
            return
    _store(ns.name, seen, vkeys, dumps(value), ns.ttl, "")


def cache_purge(namespace: str) -> int:
    """Staff action: make every value of the namespace unreachable at once (a version bump),
    then delete them to give the memory back. Returns how many keys were deleted."""
    ns = namespace_get(namespace)
    if ns.name == RATE_LIMIT:
        raise ValueError("rate_limit keys belong to the limiter")
    namespace_bump(ns.name)
    from django.core.cache import cache

    # IGNORE_EXCEPTIONS makes django-redis answer None when Redis is down.
    return cache.delete_pattern(namespace_pattern(ns.name)) or 0


def cache_hot_members(namespace: str, *, limit: int) -> list[str]:
    """The most read members (e.g. document ids) of a namespace, most read first."""
    ns = namespace_get(namespace)

    def read(client):
        return client.zrevrange(hot_key(ns.name), 0, max(0, limit - 1))

    try:
        return [member.decode() for member in backend.call(read)]
    except backend.Unavailable:
        return []
