"""Whether a user has a page open, answered in any process from Redis.

Each open socket (conversations/consumers.py) is a member of the sorted set
`<prefix>:presence:<user id>` scored with the time it expires: it enters on connect, is
refreshed every PRESENCE_TTL_SECONDS / 3 while open and leaves on disconnect. A socket whose
process died without leaving expires after PRESENCE_TTL_SECONDS, so the answer is never
wrong for longer than that.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

from .redis import FAILURES, async_redis_client, redis_client

logger = logging.getLogger(__name__)


def _key(user_id: int) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:presence:{user_id}"


def presence_refresh_interval() -> float:
    return settings.PRESENCE_TTL_SECONDS / 3


async def presence_enter(*, user_id: int, channel: str) -> None:
    """Mark the socket `channel` open now (also the periodic refresh)."""
    ttl = settings.PRESENCE_TTL_SECONDS
    now = time.time()
    key = _key(user_id)
    try:
        pipe = async_redis_client().pipeline(transaction=False)
        pipe.zadd(key, {channel: now + ttl})
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.expire(key, ttl)
        await pipe.execute()
    except FAILURES:
        logger.warning("Could not record presence of user %s", user_id, exc_info=True)


async def presence_leave(*, user_id: int, channel: str) -> None:
    try:
        await async_redis_client().zrem(_key(user_id), channel)
    except FAILURES:
        logger.warning("Could not clear presence of user %s", user_id, exc_info=True)


def presence_page_open(*, user_id: int) -> bool:
    """True when the user has at least one live socket. Unknown (Redis unreachable) reads as
    False: a needless notification is better than a missed one."""
    try:
        return bool(redis_client(decode=True).zcount(_key(user_id), time.time(), "+inf"))
    except FAILURES:
        logger.warning("Could not read presence of user %s", user_id, exc_info=True)
        return False
