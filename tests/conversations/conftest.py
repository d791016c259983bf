"""Chat pipeline fixtures: the GLM test server (real zhipuai SDK on loopback), a listener on a
conversation's channel group (real Redis), and, for end-to-end tests, a Celery worker and an
ASGI server of our own that use a queue no other test's worker consumes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.test import Client

from conversations import realtime
from openspark.embedded import free_port
from openspark.llm.testserver import GLMTestServer
from tests.live import LiveProcess, _spawn, start_asgi_server, subprocess_env

# Unique per run: tasks queued by one run (or by tests without a worker) are never picked up
# by another run's worker.
CHAT_QUEUE = f"ostest-chat-{uuid.uuid4().hex[:8]}"
TEST_KEY = "test-key.secret"


@pytest.fixture(scope="session", autouse=True)
def _loopback_bypasses_proxy():
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))


@pytest.fixture(autouse=True)
def _chat_queue(settings):
    settings.CHAT_TASK_QUEUE = CHAT_QUEUE


@pytest.fixture(autouse=True)
def _no_reply_logs():
    """Reply logs are keyed by message id, and ids repeat from one test to the next."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:reply:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def _glm_server():
    with GLMTestServer(port=0) as server:
        yield server
    redis.Redis.from_url(settings.REDIS_URL).delete(CHAT_QUEUE, f"ostest:{CHAT_QUEUE}")


@pytest.fixture
def glm_server(_glm_server):
    """One server per session; each test starts with no faults, no latency, an empty log."""
    _glm_server.reset()
    yield _glm_server
    _glm_server.reset()


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


# --- live servers ----------------------------------------------------------------------------


def chat_env(glm_server: GLMTestServer) -> dict[str, str]:
    return subprocess_env(
        CHAT_TASK_QUEUE=CHAT_QUEUE,
        LLM_PROVIDER="zhipuai",
        ZHIPUAI_API_KEY=TEST_KEY,
        ZHIPUAI_BASE_URL=glm_server.base_url,
        LLM_REQUEST_TIMEOUT="5",
        LLM_RETRY_MAX_ATTEMPTS="2",
    )


def start_chat_worker(log_dir, env: dict, *, concurrency: int = 8) -> LiveProcess:
    """Like tests.live.start_celery_worker, consuming only the chat queue of this run."""
    name = f"chat-worker-{free_port()}"
    args = [sys.executable, "-m", "celery", "-A", "openspark", "worker", "--loglevel", "INFO",
            "--pool", "threads", "--concurrency", str(concurrency), "-n", f"{name}@%h",
            "-Q", env["CHAT_TASK_QUEUE"],
            "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    worker = _spawn(name, args, log_dir, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"Chat worker exited:\n{worker.log()}")
        if " ready." in worker.log():
            return worker
        time.sleep(0.2)
    worker.stop()
    raise RuntimeError(f"Chat worker did not start:\n{worker.log()}")


@pytest.fixture(scope="session")
def chat_worker(django_db_setup, live_logs, _glm_server):
    worker = start_chat_worker(live_logs, chat_env(_glm_server))
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def chat_asgi(django_db_setup, live_logs, _glm_server):
    """A uvicorn whose services queue replies on this run's chat queue."""
    server = start_asgi_server(live_logs, env=chat_env(_glm_server))
    yield server
    server.stop()


@pytest.fixture
def session_cookie():
    """A logged-in session for `user`, as the cookie a browser would send."""

    def make(user) -> str:
        client = Client()
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        return f"{name}={client.cookies[name].value}"

    return make
