"""A scaled-out deployment on this machine: two ASGI servers (A and B), two Celery workers and
beat, all on the test database (SQLite file or PostgreSQL), the test Redis and a standalone
Milvus server, with the GLM test server as the model and the embedder. Nothing is shared
between the processes but those services, as between hosts.

The stack gets its own Redis key prefix, queues and Milvus collections, so the run's other
live servers (tests/conftest.py, tests/chat_live.py) never take its work. Recovery settings
are short so a killed worker's reply or document is dealt with while the test waits."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.test import Client
from websockets.sync.client import ClientConnection, connect

from knowledge.vectorstore import VectorStore
from tests.chat_live import chat_env
from tests.live import (
    LiveProcess,
    start_asgi_server,
    start_celery_beat,
    start_celery_worker,
)

# Recovery within the test's time (docs/operations.md, "Scale-out, tested"): a streaming reply
# whose worker died is failed once its lease has lapsed and it has been quiet that long; a
# document whose run died is queued again once it has not moved for STUCK seconds.
LEASE_SECONDS = 8
STUCK_SECONDS = 8
CONFIG_TTL = 0.5


@dataclass
class Stack:
    a: LiveProcess
    b: LiveProcess
    workers: list[LiveProcess]
    beat: LiveProcess
    env: dict[str, str]
    queues: list[str]
    log_dir: Path
    # This process's view of the stack's vectors (one client: Milvus refuses clients that
    # connect again and again).
    vectors: VectorStore

    @property
    def prefix(self) -> str:
        return self.env["REDIS_KEY_PREFIX"]

    def alive_workers(self) -> list[LiveProcess]:
        return [w for w in self.workers if w.process.poll() is None]

    def ensure_workers(self, count: int = 2) -> None:
        """Replace killed workers, as an orchestrator would restart them."""
        missing = count - len(self.alive_workers())
        started = [
            start_celery_worker(self.log_dir, env=self.env, queues=self.queues, wait=False)
            for _ in range(missing)
        ]
        self.workers += [worker.wait_ready() for worker in started]

    def worker_of(self, task_id: str, timeout: float = 30) -> LiveProcess:
        """The worker that received task `task_id` (Celery logs each message it takes)."""
        mark = f"[{task_id}] received"
        return wait_for(
            lambda: next((w for w in self.workers if mark in w.log(tail=None)), None),
            timeout=timeout,
            what=f"a worker to receive {task_id}",
        )

    def logs(self) -> str:
        processes = [self.a, self.b, self.beat, *self.workers]
        return "\n".join(f"--- {p.name}\n{p.log(tail=3000)}" for p in processes)


def wait_for(predicate: Callable, *, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def stack(django_db_setup, live_logs, milvus_server, _glm_server):
    tag = uuid.uuid4().hex[:8]
    env = chat_env(_glm_server)
    queues = {
        "CHAT_TASK_QUEUE": f"so{tag}-chat",
        "INGEST_TASK_QUEUE": f"so{tag}-ingest",
        "CELERY_TASK_DEFAULT_QUEUE": f"so{tag}-default",
    }
    env.update(
        queues,
        REDIS_KEY_PREFIX=f"{os.environ['REDIS_KEY_PREFIX']}-so{tag}",
        MILVUS_URI=milvus_server,
        KNOWLEDGE_COLLECTION_PREFIX=f"so{tag}",
        # Ten batches for a document of eighty passages: progress moves every batch.
        KNOWLEDGE_EMBED_BATCH_SIZE="8",
        KNOWLEDGE_STUCK_AFTER_SECONDS=str(STUCK_SECONDS),
        KNOWLEDGE_SWEEP_SECONDS="1",
        # The lease outlives a model call that has not answered yet (timeout + retries).
        LLM_REQUEST_TIMEOUT="4",
        LLM_RETRY_MAX_SECONDS="2",
        CHAT_REPLY_LEASE_SECONDS=str(LEASE_SECONDS),
        CHAT_REPLIES_SWEEP_SECONDS="1",
        THROTTLE_CONFIG_TTL=str(CONFIG_TTL),
    )
    log_dir = live_logs / f"scaleout-{tag}"
    log_dir.mkdir()
    queue_names = list(queues.values())
    # Spawned together, then awaited: they start side by side.
    a, b = (start_asgi_server(log_dir, env=env, wait=False) for _ in range(2))
    workers = [
        start_celery_worker(log_dir, env=env, queues=queue_names, wait=False) for _ in range(2)
    ]
    beat = start_celery_beat(log_dir, env=env, wait=False)
    stack = Stack(
        a=a.wait_ready(),
        b=b.wait_ready(),
        workers=[worker.wait_ready() for worker in workers],
        beat=beat.wait_ready(),
        env=env,
        queues=queue_names,
        log_dir=log_dir,
        vectors=VectorStore(uri=milvus_server, prefix=env["KNOWLEDGE_COLLECTION_PREFIX"]),
    )
    yield stack
    processes = (stack.beat, *stack.workers, stack.a, stack.b)
    for process in processes:  # all stop side by side
        if process.process.poll() is None:
            process.process.terminate()
    for process in processes:
        process.stop()
    _forget(stack, queue_names)


def _forget(stack: Stack, queues: list[str]) -> None:
    """The stack's Redis keys, queues and collections go with it."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{stack.prefix}:*", count=1000))
        broker = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
        keys += [f"{broker}{queue}" for queue in queues]
        client.delete(*keys)
    finally:
        client.close()
    store = stack.vectors
    try:
        for name in store.our_collections():
            store.client.drop_collection(name)
    finally:
        store.close()


def _keys_clear(prefix: str) -> None:
    """The stack's keys but the channel layer's: ids repeat after a flush (SQLite), and a
    user must not inherit a budget, a cached page or a reply log from an earlier test's."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = [
            key
            for key in client.scan_iter(f"{prefix}:*", count=1000)
            if not key.startswith(f"{prefix}:asgi".encode())
        ]
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def scale(stack, glm_server):
    """The stack with two live workers and none of an earlier test's keys. No process logs a
    traceback during the test (a sweep that fails, say, fails only in its worker's log)."""
    stack.ensure_workers(2)
    _keys_clear(stack.prefix)
    processes = (stack.a, stack.b, stack.beat, *stack.workers)
    seen = [len(process.log(tail=None)) for process in processes]
    yield stack
    for process, start in zip(processes, seen, strict=True):
        assert "Traceback" not in process.log(tail=None)[start:], (process.name, stack.logs())


def session_cookie(user) -> str:
    """A logged-in session, as the cookie a browser would send."""
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


@contextlib.contextmanager
def open_socket(server: LiveProcess, cookie: str) -> Iterator[ClientConnection]:
    """An authenticated chat socket on `server`, past its `ready` event."""
    url = server.url.replace("http://", "ws://") + "/ws/chat/"
    with connect(url, origin=server.url, additional_headers={"Cookie": cookie}, proxy=None) as ws:
        assert json.loads(ws.recv(timeout=15))["type"] == "ready"
        yield ws


def reply_events(ws: ClientConnection, reply_id: int, timeout: float = 30) -> list[dict]:
    """The reply's events on the socket (deltas, then its reply.done or reply.error)."""
    events = []
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        reply = event.get("message") if event["type"] == "reply.done" else None
        if event.get("message_id") == reply_id or (reply and reply["id"] == reply_id):
            events.append(event)
            if event["type"] in ("reply.done", "reply.error"):
                return events
