"""Events to every open page of a user, over the channel layer: the chat websocket
(conversations/consumers.py) joins `user_group_name(user id)` on connect and forwards the
events below as they are. Presence — whether a user has any page open, asked from any
process — is in presence.py."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 5.0


def user_group_name(user_id: int) -> str:
    """Every socket of a user (session ends, user changes, notifications)."""
    return f"chat.user.{user_id}"


def user_event_publish(*, user_id: int, event: dict[str, Any]) -> None:
    """Send `event` (its `type` names the consumer's handler) to every socket of the user,
    from synchronous code. A failure is logged, not raised: pages read the database again
    when they (re)connect, so a lost event costs only liveness."""
    send = async_to_sync(get_channel_layer().group_send)
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            send(user_group_name(user_id), event)
        else:
            # Sync code on a thread that runs an event loop cannot block on that loop: the
            # send runs on a helper thread (rare: ORM work belongs off the loop anyway).
            with ThreadPoolExecutor(max_workers=1) as helper:
                helper.submit(send, user_group_name(user_id), event).result(PUBLISH_TIMEOUT)
    except Exception:
        logger.warning("Could not publish %s to user %s", event.get("type"), user_id, exc_info=True)
