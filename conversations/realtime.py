"""Redis plumbing of a streaming reply: the conversation's channel group, the per-reply delta
log, the stop flag and the worker's lease; and the user's group, which tells a user's sockets
that a session ended or the user changed.

Delivery without gaps or duplicates rests on one ordering rule. The worker appends a batch to
the reply log *before* it sends it to the group; a reader joins the group *before* it reads
the log. Every batch is therefore either already in the log when the reader reads it, or sent
to the group after the reader joined; readers drop anything whose `seq` they already sent.

Keys (all under settings.REDIS_KEY_PREFIX, so test runs and products never share them):
- `<prefix>:reply:<id>` a Redis stream; delta entries have the id `<seq>-0` and a field `d`,
  the final entry has an automatic (millisecond) id, always larger, and a field `end`;
- `<prefix>:reply:<id>:stop` set by a stop request, read by the worker between batches;
- `<prefix>:reply:<id>:lease` held by the worker streaming the reply (redelivery guard).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import redis
from channels.layers import get_channel_layer
from django.conf import settings

from openspark.core import live
from openspark.core.redis import async_redis_client, redis_client

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 5.0


def group_name(conversation_id: int) -> str:
    return f"chat.conversation.{conversation_id}"


def user_group_name(user_id: int) -> str:
    """Every socket of a user: told when one of their sessions ends or the user changes, and
    of notifications (openspark.core.live, the group's one definition)."""
    return live.user_group_name(user_id)


def session_digest(session_key: str | None) -> str:
    """Names a session in events without spreading its key (a bearer secret) through Redis."""
    return hashlib.sha256((session_key or "").encode()).hexdigest()[:32]


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _key(message_id: int, suffix: str = "") -> str:
    return f"{settings.REDIS_KEY_PREFIX}:reply:{message_id}{suffix}"


# --- publishing to a group from synchronous code ---------------------------------------------


class _LoopThread:
    """One event loop per process, on a daemon thread, for channel-layer sends from sync code.

    async_to_sync would build a fresh event loop for every call made from a worker thread,
    and channels_redis keeps its connection pools per loop: every batch would open new Redis
    connections. Here all sends share one loop and its pools.
    """

    # Sends in flight at once: redis-py's asyncio pool raises (rather than waits) beyond its
    # max_connections (100 by default), and a worker may run hundreds of streaming threads.
    MAX_IN_FLIGHT = 32

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._slots: asyncio.Semaphore | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # A forked child inherits the object but not the thread: start a new one.
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                self._slots = asyncio.Semaphore(self.MAX_IN_FLIGHT)
                thread = threading.Thread(
                    target=loop.run_forever, name="chat-publisher", daemon=True
                )
                thread.start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        loop = self._ensure()
        slots = self._slots

        async def bounded() -> Any:
            async with slots:
                return await coro

        return asyncio.run_coroutine_threadsafe(bounded(), loop).result(timeout)


_loop_thread = _LoopThread()


def publish(*, conversation_id: int, event: dict[str, Any]) -> None:
    """Send `event` (its `type` names the consumer handler) to everyone on the conversation.

    Blocks until Redis has it, so that events of one reply keep their order. A failure is
    logged, not raised: the database stays the source of truth and readers resync from it.
    """
    _group_send(group_name(conversation_id), event)


def publish_to_user(*, user_id: int, event: dict[str, Any]) -> None:
    """Send `event` to every socket of the user (see `publish`)."""
    _group_send(user_group_name(user_id), event)


def _group_send(group: str, event: dict[str, Any]) -> None:
    try:
        _loop_thread.run(get_channel_layer().group_send(group, event), PUBLISH_TIMEOUT)
    except Exception:
        logger.warning("Could not publish %s to %s", event.get("type"), group, exc_info=True)


# --- the reply log, stop flag and lease (worker side, synchronous) ---------------------------


def _redis() -> redis.Redis:
    return redis_client(decode=True)


def reply_lease_acquire(*, message_id: int) -> bool:
    """True when no other worker holds the reply; the lease expires if its worker dies."""
    ttl = int(_setting("CHAT_REPLY_LEASE_SECONDS", 180))
    return bool(_redis().set(_key(message_id, ":lease"), os.getpid(), nx=True, ex=ttl))


def reply_lease_held(*, message_id: int) -> bool:
    return bool(_redis().exists(_key(message_id, ":lease")))


def reply_lease_release(*, message_id: int) -> None:
    _redis().delete(_key(message_id, ":lease"))


def reply_log_reset(*, message_id: int) -> None:
    """Forget a log and stop flag left under this id (a restored database reuses ids)."""
    _redis().delete(_key(message_id), _key(message_id, ":stop"))


def reply_log_append(*, message_id: int, seq: int, delta: str) -> bool:
    """Append one batch and keep the log and the lease alive, in one round trip.

    Returns True when a stop was requested, which the worker checks at every batch anyway.
    """
    ttl = int(_setting("CHAT_REPLY_LOG_TTL", 600))
    key = _key(message_id)
    pipe = _redis().pipeline(transaction=False)
    pipe.xadd(key, {"d": delta}, id=f"{seq}-0")
    pipe.expire(key, ttl)
    pipe.expire(_key(message_id, ":lease"), int(_setting("CHAT_REPLY_LEASE_SECONDS", 180)))
    pipe.exists(_key(message_id, ":stop"))
    return bool(pipe.execute()[-1])


def reply_batch_send(*, message_id: int, conversation_id: int, seq: int, delta: str) -> bool:
    """Log one batch, then send it to the conversation as `reply.delta` (log before publish:
    see the module's ordering rule). Returns True when a stop was requested."""
    stop = reply_log_append(message_id=message_id, seq=seq, delta=delta)
    publish(
        conversation_id=conversation_id,
        event={
            "type": "reply.delta",
            "message_id": message_id,
            "conversation_id": conversation_id,
            "seq": seq,
            "delta": delta,
        },
    )
    return stop


def reply_log_end(*, message_id: int, status: str) -> None:
    """Mark the log finished; written after the final row is saved, so a reader that sees it
    reads the final message from the database."""
    ttl = int(_setting("CHAT_REPLY_LOG_TTL", 600))
    key = _key(message_id)
    pipe = _redis().pipeline(transaction=False)
    pipe.xadd(key, {"end": status})
    pipe.expire(key, ttl)
    pipe.delete(_key(message_id, ":stop"))
    pipe.execute()


def reply_log_text(*, message_id: int) -> tuple[str, int]:
    """What the log's batches spell and the last batch's seq: the text readers were sent
    ("" and 0 without a log)."""
    entries = [_entry(entry_id, fields) for entry_id, fields in _redis().xrange(_key(message_id))]
    deltas = [entry for entry in entries if entry.end is None]
    return "".join(entry.delta or "" for entry in deltas), (deltas[-1].seq if deltas else 0)


def reply_stop_request(*, message_id: int) -> None:
    ttl = int(_setting("CHAT_REPLY_LOG_TTL", 600))
    _redis().set(_key(message_id, ":stop"), 1, ex=ttl)


def reply_stop_requested(*, message_id: int) -> bool:
    return bool(_redis().exists(_key(message_id, ":stop")))


# --- reading the log (consumers and SSE, asynchronous) ---------------------------------------


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    delta: str | None = None
    # Set on the final entry: the reply's final status.
    end: str | None = None


def _aredis():
    return async_redis_client()


def _entry(entry_id: str, fields: dict[str, str]) -> LogEntry:
    ms, _, _ = entry_id.partition("-")
    if "end" in fields:
        return LogEntry(seq=0, end=fields["end"])
    return LogEntry(seq=int(ms), delta=fields.get("d", ""))


async def reply_log_read(*, message_id: int, after_seq: int = 0) -> tuple[list[LogEntry], bool]:
    """The deltas after `after_seq` in order, the end entry last if written; and whether the
    log exists at all (it expires CHAT_REPLY_LOG_TTL seconds after the last write)."""
    client = _aredis()
    key = _key(message_id)
    rows = await client.xrange(key, min=f"({after_seq}-0" if after_seq else "-")
    if not rows and not await client.exists(key):
        return [], False
    return [_entry(entry_id, fields) for entry_id, fields in rows], True


async def reply_log_wait(*, message_id: int, after_seq: int, timeout: float) -> list[LogEntry]:
    """Block up to `timeout` seconds for entries after `after_seq` (also for a log that does
    not exist yet: the reply may still be queued)."""
    key = _key(message_id)
    last_id = f"{after_seq}-0" if after_seq else "0-0"
    result = await _aredis().xread({key: last_id}, block=max(1, int(timeout * 1000)))
    rows = result[0][1] if result else []
    return [_entry(entry_id, fields) for entry_id, fields in rows]
