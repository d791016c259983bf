"""The chat stack's live fixtures, shared by every test folder (a pytest plugin loaded by
tests/conftest.py, so each session-scoped server exists once): the GLM test server (real
zhipuai SDK on loopback), a Celery worker that consumes only this run's chat queue, and an
ASGI server whose services queue replies there."""

from __future__ import annotations

import os
import uuid

import pytest
import redis
from django.conf import settings

from openspark.llm.testserver import GLMTestServer
from tests.live import (
    redis_delete_matching,
    start_asgi_server,
    start_celery_worker,
    subprocess_env,
)

# Unique per run: tasks queued by one run (or by tests without a worker) are never picked up
# by another run's worker.
CHAT_QUEUE = f"ostest-chat-{uuid.uuid4().hex[:8]}"
TEST_KEY = "test-key.secret"


@pytest.fixture(scope="session", autouse=True)
def _loopback_bypasses_proxy():
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))


@pytest.fixture(autouse=True)
def _no_reply_logs():
    """Reply logs are keyed by message id, and ids repeat from one test to the next."""
    redis_delete_matching("reply:*")


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


def chat_env(glm_server: GLMTestServer) -> dict[str, str]:
    return subprocess_env(
        CHAT_TASK_QUEUE=CHAT_QUEUE,
        LLM_PROVIDER="zhipuai",
        ZHIPUAI_API_KEY=TEST_KEY,
        ZHIPUAI_BASE_URL=glm_server.base_url,
        LLM_REQUEST_TIMEOUT="5",
        LLM_RETRY_MAX_ATTEMPTS="2",
    )


@pytest.fixture(scope="session")
def chat_worker(django_db_setup, live_logs, milvus_lite, _glm_server):
    worker = start_celery_worker(live_logs, env=chat_env(_glm_server), queues=[CHAT_QUEUE])
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def chat_asgi(django_db_setup, live_logs, milvus_lite, _glm_server):
    """A uvicorn whose services queue replies on this run's chat queue."""
    server = start_asgi_server(live_logs, env=chat_env(_glm_server))
    yield server
    server.stop()
