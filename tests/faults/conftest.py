"""Faults injected into the product as it runs (docs/reliability.md, "Faults injected"): a
uvicorn and a Celery worker as subprocesses, on parts each test may break without touching
the rest of the run — their own Milvus Lite, their own queues, their uploads on a small
tmpfs — plus the GLM test server and this run's Redis and database.

`FaultClient` is the user: every response it gets is checked (never a 500, every error in the
one error shape), and `settle_*` wait until an accepted message or document reached its end."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from accounts.services import api_key_create
from openspark.embedded import start_milvus_lite
from tests.chat_live import TEST_KEY, chat_env
from tests.live import ROOT, LiveProcess, start_asgi_server, start_celery_worker

EMBEDDING_DIMENSION = 256
REPLY_ENDS = {"completed", "failed", "stopped"}
DOCUMENT_ENDS = {"ready", "failed"}
TMPFS_BYTES = 2 * 1024 * 1024


class FaultClient(httpx.Client):
    """An API consumer that records every status it was answered."""

    def __init__(self, base_url: str, api_key: str) -> None:
        super().__init__(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
            event_hooks={"response": [self._check]},
        )
        self.statuses: list[tuple[str, int]] = []

    def _check(self, response: httpx.Response) -> None:
        request = response.request
        self.statuses.append((f"{request.method} {request.url.path}", response.status_code))
        assert response.status_code != 500, f"{request.method} {request.url} answered 500"
        if response.status_code >= 400 and request.url.path.startswith("/api/"):
            response.read()
            error = response.json()["error"]
            assert error["code"] and error["message"], response.text

    def send_message(self, content: str, **extra) -> dict:
        response = self.post("/api/v1/messages/", json={"content": content, **extra})
        assert response.status_code == 202, response.text
        return response.json()["reply"]

    def settle_reply(self, reply_id: int, timeout: float = 60) -> dict:
        from conversations.models import Message

        rows = Message.objects.filter(id=reply_id, status__in=REPLY_ENDS)
        wait_until(rows.exists, timeout, f"reply {reply_id} never ended")
        return self._read(f"/api/v1/messages/{reply_id}/")

    def settle_document(self, document_id: int, timeout: float = 60) -> dict:
        from knowledge.models import Document

        rows = Document.objects.filter(id=document_id, status__in=DOCUMENT_ENDS)
        wait_until(rows.exists, timeout, f"document {document_id} never ended")
        return self._read(f"/api/v1/knowledge/documents/{document_id}/")

    def _read(self, path: str) -> dict:
        """What the user reads once it ended (the database was watched, not the API: polling
        would spend the plan's request budget)."""
        response = self.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def create_base(self, name: str = "Faults", **fields) -> dict:
        response = self.post("/api/v1/knowledge/bases/", json={"name": name, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def upload(self, base_id: int, name: str, content: bytes) -> httpx.Response:
        return self.post(
            f"/api/v1/knowledge/bases/{base_id}/documents/", files={"file": (name, content)}
        )


def fault_client(server_url: str, user) -> FaultClient:
    _key, raw = api_key_create(user=user, name=f"faults-{uuid.uuid4().hex[:6]}")
    return FaultClient(server_url, raw)


def wait_until(condition, timeout: float, message: str = "", interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message or "timed out"
        time.sleep(interval)


@dataclass
class Stack:
    """One deployment of the product under test: its settings (env), servers and parts."""

    env: dict[str, str]
    logs: Path
    asgi: LiveProcess | None = None
    worker: LiveProcess | None = None
    extra: dict = field(default_factory=dict)

    def start_worker(self) -> LiveProcess:
        self.worker = start_celery_worker(self.logs, env=self.env, queues=self.queues)
        return self.worker

    @property
    def queues(self) -> list[str]:
        return [self.env["CHAT_TASK_QUEUE"], self.env["INGEST_TASK_QUEUE"],
                self.env["CELERY_TASK_DEFAULT_QUEUE"]]  # fmt: skip

    def beat_sends(self, task_name: str) -> None:
        """What celery beat does on its schedule: send the periodic task to the broker."""
        code = (
            "import django; django.setup(); from openspark.celery import app; "
            f"app.send_task({task_name!r})"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    def logs_text(self) -> str:
        return "\n".join(p.log() for p in (self.asgi, self.worker) if p is not None)

    def stop(self) -> None:
        for process in (self.asgi, self.worker):
            if process is not None:
                process.stop()


def stack_env(glm_server, **extra: str) -> dict[str, str]:
    """Own queues, so that no other worker of the run takes these tasks; embeddings from the
    GLM test server; short sweep thresholds, so the beat jobs act within a test."""
    run = uuid.uuid4().hex[:8]
    env = chat_env(glm_server)
    env.update(
        CHAT_TASK_QUEUE=f"ostest-fchat-{run}",
        INGEST_TASK_QUEUE=f"ostest-fingest-{run}",
        CELERY_TASK_DEFAULT_QUEUE=f"ostest-fdefault-{run}",
        ZHIPUAI_API_KEY=TEST_KEY,
        ZHIPUAI_EMBEDDING_DIMENSION=str(EMBEDDING_DIMENSION),
        CHAT_PENDING_REQUEUE_SECONDS="2",
        CHAT_REPLY_LEASE_SECONDS="4",
        KNOWLEDGE_STUCK_AFTER_SECONDS="3",
        KNOWLEDGE_EMBED_BATCH_SIZE="16",  # a long document takes several embedding calls
        TASK_RETRY_BACKOFF="2",
        TASK_RETRY_BACKOFF_MAX="5",
    )
    env.update(extra)
    return env


def fault_logs(name: str) -> Path:
    """Outside pytest's temporary folders, which concurrent runs on this machine prune: the
    servers' logs are what explains a failure here."""
    folder = Path(tempfile.gettempdir()) / "openspark-fault-logs" / f"{name}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="package")
def small_disk(tmp_path_factory):
    """A real 2 MB filesystem (tmpfs) for the stack's uploads; the disk-full fault fills it."""
    mount = tmp_path_factory.mktemp("small-disk")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.contextmanager
def running_stack(env: dict[str, str], logs: Path, *, service, **extra):
    """An ASGI server and a worker on `env`; `service` (the server the stack was given for
    this test module) is stopped with them."""
    stack = Stack(env=env, logs=logs, extra=extra)
    try:
        stack.asgi = start_asgi_server(logs, env=env)
        stack.start_worker()
        yield stack
    finally:
        stack.stop()
        service.stop()


@pytest.fixture(scope="package")
def stack(django_db_setup, tmp_path_factory, _glm_server, small_disk, milvus_lite):
    """ASGI server + threads worker on their own Milvus Lite and a small disk."""
    milvus_dir = tmp_path_factory.mktemp("fault-milvus")
    milvus = start_milvus_lite(milvus_dir / "data")
    env = stack_env(_glm_server, MILVUS_URI=milvus.url, MEDIA_ROOT=str(small_disk))
    logs = fault_logs("stack")
    with running_stack(env, logs, service=milvus, milvus=milvus, milvus_dir=milvus_dir) as stack:
        yield stack
