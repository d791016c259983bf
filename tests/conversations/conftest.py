"""Chat pipeline fixtures: this process on the GLM test server or the offline provider, a
listener on a conversation's channel group (real Redis), and websockets to the live ASGI
server. The live servers (GLM test server, chat worker, chat ASGI server) come from
tests/chat_live.py."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.test import Client
from websockets.sync.client import ClientConnection, connect

from conversations import realtime
from tests.chat_live import CHAT_QUEUE, TEST_KEY


@pytest.fixture(autouse=True)
def _chat_queue(settings):
    settings.CHAT_TASK_QUEUE = CHAT_QUEUE


@pytest.fixture
def glm(settings, glm_server):
    """This process talks to the GLM test server through the zhipuai provider."""
    settings.LLM_PROVIDER = "zhipuai"
    settings.ZHIPUAI_API_KEY = TEST_KEY
    settings.ZHIPUAI_BASE_URL = glm_server.base_url
    settings.LLM_REQUEST_TIMEOUT = 2.0
    settings.LLM_RETRY_MAX_ATTEMPTS = 2
    settings.LLM_RETRY_MAX_SECONDS = 10.0
    return glm_server


@pytest.fixture
def offline(settings):
    settings.LLM_PROVIDER = "offline"


class GroupListener:
    """A member of a conversation's channel group, on its own channel layer and event loop."""

    def __init__(self, conversation_id: int) -> None:
        config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
        self.layer = RedisChannelLayer(**config)
        self.loop = asyncio.new_event_loop()
        self.group = realtime.group_name(conversation_id)
        self.channel = self.loop.run_until_complete(self.layer.new_channel())
        self.loop.run_until_complete(self.layer.group_add(self.group, self.channel))

    def collect(self, *, until: str = "", timeout: float = 10.0) -> list[dict]:
        """Events until one of type `until` (or `timeout` seconds of silence)."""
        events: list[dict] = []

        async def run() -> None:
            while True:
                try:
                    event = await asyncio.wait_for(self.layer.receive(self.channel), timeout)
                except TimeoutError:
                    return
                events.append(event)
                if event["type"] == until:
                    return

        self.loop.run_until_complete(run())
        return events

    def close(self) -> None:
        self.loop.run_until_complete(self.layer.group_discard(self.group, self.channel))
        self.loop.run_until_complete(self.layer.close_pools())
        self.loop.close()


@pytest.fixture
def listen():
    listeners: list[GroupListener] = []

    def make(conversation_id: int) -> GroupListener:
        listeners.append(GroupListener(conversation_id))
        return listeners[-1]

    yield make
    for listener in listeners:
        listener.close()


@pytest.fixture
def session_cookie():
    """A logged-in session for `user`, as the cookie a browser would send."""

    def make(user) -> str:
        client = Client()
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        return f"{name}={client.cookies[name].value}"

    return make


@pytest.fixture
def live(chat_worker, chat_asgi, glm_server):
    # Slow enough to act mid-reply, fast enough for a lean suite.
    glm_server.first_token_delay = 0.05
    glm_server.token_delay = 0.02
    return chat_asgi


@pytest.fixture
def ws_open(live):
    """Opens websockets to the live server; all are closed when the test ends."""
    with contextlib.ExitStack() as stack:

        def open_(cookie: str | None, *, origin: str | None = None) -> ClientConnection:
            url = live.url.replace("http://", "ws://") + "/ws/chat/"
            headers = {"Cookie": cookie} if cookie else {}
            return stack.enter_context(
                connect(url, origin=origin or live.url, additional_headers=headers, proxy=None)
            )

        yield open_


@pytest.fixture
def ready(ws_open):
    """An authenticated socket, past its `ready` event."""

    def open_(cookie: str) -> ClientConnection:
        ws = ws_open(cookie)
        assert json.loads(ws.recv(timeout=15))["type"] == "ready"
        return ws

    return open_
