"""The one home of Redis access: clients, the circuit-breaker policy, Lua scripts and the
batched counters, all on redis-py's public API.

- `async_redis_client()`: the same for code on an event loop (one client per loop).
- `redis_client(url, timeout)`: one redis-py client (and so one connection pool) per URL and
  timeout per process; the pool is safe across threads. A command is sent again once, at
  once, when its connection turns out to be closed (the server restarted or dropped an idle
  connection: the command did not run), never after a timeout (it may have run: a limiter
  check would be charged twice). redis-py's default would retry both, ten times, backing off.
- `Breaker`: after a failure, callers skip Redis for a short while instead of paying a
  timeout on every request; the first call after that tries again. Every caller (limiter,
  cache) uses this one policy, each with its own breaker and retry setting.
- `LuaScript`: a script called by SHA; redis-py's `Script` loads it again when the server
  answers NOSCRIPT (first call, restart, SCRIPT FLUSH), in pipelines too.
- `CounterBatch`: counters added in memory on the request path and written by one daemon
  thread per process, once a second, in one pipeline (the limiter's and the cache's stats).
- `BrokerTransport`: kombu's Redis transport (Celery's broker) with one fix, so a worker
  survives Redis going away (CELERY_BROKER_TRANSPORT).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TypeVar

import redis
import redis.asyncio
from django.conf import settings
from kombu.transport import redis as kombu_redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .state import on_reset, process_memo

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What a Redis call can raise when the server is unreachable, slow or restarting.
FAILURES = (redis.RedisError, OSError)


class Unavailable(Exception):
    """Redis did not answer, or its breaker is open."""


def redis_client(
    url: str | None = None, timeout: float | None = None, *, decode: bool = False
) -> redis.Redis:
    """The process's client for `url` (default REDIS_URL) with this socket timeout (default
    REDIS_SOCKET_TIMEOUT); `decode`: replies as str."""
    return _client(
        url or settings.REDIS_URL,
        settings.REDIS_SOCKET_TIMEOUT if timeout is None else timeout,
        decode,
    )


@process_memo(maxsize=64)
def _client(url: str, timeout: float, decode: bool) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=decode,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        health_check_interval=30,
    )


_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
on_reset(_async_clients.clear, derived_from_settings=True)


def async_redis_client() -> redis.asyncio.Redis:
    """A `redis.asyncio` client (str replies) for the running event loop, at REDIS_URL: its
    connections belong to that loop, so there is one client per loop. For code on the event
    loop, which must never block on a socket."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
            # Every SSE reader holds a connection in XREAD BLOCK: the default cap (100) is low.
            max_connections=10_000,
        )
    return client


class Breaker:
    """Open for `retry_seconds()` after a failure: calls raise `Unavailable` at once instead
    of waiting out a timeout each."""

    def __init__(self, name: str, retry_seconds: Callable[[], float]) -> None:
        self.name = name
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self.reset()
        on_reset(self.reset)

    def reset(self) -> None:
        self.open_until = 0.0
        self.failed_at = -math.inf
        self.down = False
        self.last_error = ""

    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def failed_within(self, seconds: float) -> bool:
        return time.monotonic() - self.failed_at < seconds

    def trip(self, error: BaseException) -> None:
        with self._lock:
            first = not self.down
            self.failed_at = time.monotonic()
            self.open_until = self.failed_at + self.retry_seconds()
            self.down = True
            self.last_error = f"{type(error).__name__}: {error}"
        if first:
            logger.warning("Redis (%s) unavailable: %s", self.name, self.last_error)

    def call(self, fn: Callable[[], T]) -> T:
        """fn() through the breaker: `Unavailable` when open or when fn() fails."""
        if self.is_open():
            raise Unavailable(f"{self.name}: breaker open")
        try:
            result = fn()
        except FAILURES as error:
            self.trip(error)
            raise Unavailable(str(error)) from error
        if self.down:
            with self._lock:
                recovered, self.down = self.down, False
            if recovered:
                logger.warning("Redis (%s) reachable again", self.name)
        return result


class LuaScript:
    """A Lua script run by SHA through redis-py's `Script` (NOSCRIPT → load → run again)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._script = redis.Redis().register_script(source)  # no connection is made here

    @property
    def sha(self) -> str:
        return self._script.sha

    def __call__(self, client, keys: Sequence = (), args: Sequence = ()):
        """Run on `client` (a client or a pipeline)."""
        return self._script(keys=list(keys), args=list(args), client=client)


class CounterBatch:
    """Counters (hash fields and sorted-set members) added in memory and written to Redis by
    one daemon thread per process once every `interval` seconds, in one pipeline per Redis.
    `flush()` writes what is pending at once (a reader that wants its own process's last
    second). A batch that cannot be written (Redis down) is kept for the next flush, up to
    `KEEP_MAX` items; beyond that counts are dropped (they are monitoring, never accounting).
    After fork the child starts empty (the parent writes its own)."""

    KEEP_MAX = 100_000

    def __init__(self, name: str, interval: float = 1.0) -> None:
        self.name = name
        self.interval = interval
        self._clear()
        on_reset(self._clear)
        os.register_at_fork(after_in_child=self._clear)

    def _clear(self) -> None:
        # New locks too: a fork while the parent's writer held one would leave the child's
        # copy held forever (and the child's counters never written).
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._thread: threading.Thread | None = None
        self._failing = False

    def add(self, url: str, key: str, field: str, amount: int = 1, *, ttl: int = 0) -> None:
        """HINCRBY key field amount (and EXPIRE key ttl when ttl)."""
        self._append((url, "h", key, field, amount, ttl))

    def add_member(self, url: str, key: str, member: str, amount: int = 1, *, ttl: int = 0):
        """ZINCRBY key amount member (and EXPIRE key ttl when ttl)."""
        self._append((url, "z", key, member, amount, ttl))

    def pending(self) -> list[tuple]:
        """What is not written yet: (url, kind, key, field, amount, ttl) items. Waits for a
        write in flight, which takes the items off the queue and puts back those it could
        not write: read in between, they would be missing."""
        with self._flush_lock:
            return list(self._queue)

    def _append(self, item: tuple) -> None:
        self._queue.append(item)  # deque.append is atomic: no lock on the request path
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name=f"{self.name}-counters", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        me = threading.current_thread()
        while self._thread is me:
            time.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # the writer must never die
                logger.exception("%s counters not written", self.name)

    def flush(self) -> None:
        with self._flush_lock:
            queue = self._queue
            items = [queue.popleft() for _ in range(len(queue))]
            if not items:
                return
            totals: dict[tuple, int] = collections.Counter()
            ttls: dict[tuple[str, str], int] = {}
            for url, kind, key, field, amount, ttl in items:
                totals[(url, kind, key, field)] += amount
                if ttl:
                    ttls[(url, key)] = ttl
            for url in {key[0] for key in totals}:
                if not self._write(url, totals, ttls) and len(self._queue) < self.KEEP_MAX:
                    self._queue.extend(item for item in items if item[0] == url)

    def _write(self, url: str, totals: dict, ttls: dict) -> bool:
        try:
            pipe = redis_client(url).pipeline(transaction=False)
            for (item_url, kind, key, field), amount in totals.items():
                if item_url != url:
                    continue
                if kind == "h":
                    pipe.hincrby(key, field, amount)
                else:
                    pipe.zincrby(key, amount, field)
            for (ttl_url, key), ttl in ttls.items():
                if ttl_url == url:
                    pipe.expire(key, ttl)
            pipe.execute()
        except FAILURES as error:
            if not self._failing:
                logger.warning("%s counters not written (%s)", self.name, error)
            self._failing = True
            return False
        self._failing = False
        return True


# --- Celery's broker ----------------------------------------------------------------------


class _BrokerChannel(kombu_redis.Channel):
    @contextlib.contextmanager
    def conn_or_acquire(self, client=None):
        # kombu 5.7, broker connection lost: Celery detaches the transport from the
        # connection, yet the old channel is still used — closed a second time (putting its
        # unacknowledged messages back) and asked to acknowledge the tasks that were running.
        # Both need a new Redis client, which then fails with an AttributeError that stops
        # the worker for good ("Unrecoverable error"). A connection error instead is what both
        # callers expect: the close goes on, the ack is logged as lost. Those messages stay in
        # Redis's unacked index and come back after the visibility timeout (and if Redis lost
        # them, the beat sweeps queue their work again); the worker reconnects on its own.
        if client is None and self.connection.client is None:
            raise redis.ConnectionError("The broker connection was lost.")
        with super().conn_or_acquire(client) as acquired:
            yield acquired


class BrokerTransport(kombu_redis.Transport):
    """The broker transport of `redis://` URLs (settings.CELERY_BROKER_TRANSPORT)."""

    Channel = _BrokerChannel
