"""Hostile uploads through the API, processed by a real prefork ingest worker with the
deployment's time and memory limits, while a reply streams from the chat worker (threads
pool) on the GLM test server: every file ends `ready` or `failed` with a readable reason
within a bounded time, and the reply never stalls. A file that keeps killing its worker
process is failed after KNOWLEDGE_INGEST_MAX_ATTEMPTS runs instead of coming back forever."""

from __future__ import annotations

import contextlib
import io
import threading
import time
import uuid
import zipfile
from itertools import pairwise

import docx
import httpx
import psutil
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from accounts.services import api_key_create
from conversations.models import Message
from knowledge.models import Document
from knowledge.vectorstore import get_vector_store
from openspark.llm.testserver import reply_text
from tests.chat_live import CHAT_QUEUE, TEST_KEY, chat_env
from tests.live import start_celery_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

INGEST_QUEUE = f"ostest-ingest-{uuid.uuid4().hex[:8]}"
# The time limit travels with each task, from the sender's settings; the worker's own setting
# only words the reason. Files meant to meet the limit are sent with TIME_LIMIT, the others
# with ROOM, so a busy machine slowing them down cannot fail them.
TIME_LIMIT = 10  # seconds
ROOM = 300
MEMORY_LIMIT_MB = 700
MAX_ATTEMPTS = 3
# Every upload ends within this many seconds; no delta of a reply waits longer than MAX_GAP.
BOUND = 120
MAX_GAP = 5.0
EMBEDDING = {"ZHIPUAI_API_KEY": TEST_KEY, "ZHIPUAI_EMBEDDING_DIMENSION": "256"}


@pytest.fixture(scope="module")
def ingest_worker(django_db_setup, live_logs, milvus_lite, _glm_server):
    """The ingest worker as deployed (prefork: the pool that enforces time limits and gives
    each child its memory limit), embedding with Zhipu's API on the GLM test server."""
    env = chat_env(_glm_server) | EMBEDDING
    env.update(
        INGEST_TASK_QUEUE=INGEST_QUEUE,
        KNOWLEDGE_INGEST_TIME_LIMIT=str(TIME_LIMIT),
        KNOWLEDGE_INGEST_MEMORY_LIMIT_MB=str(MEMORY_LIMIT_MB),
        KNOWLEDGE_INGEST_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
    )
    worker = start_celery_worker(
        live_logs, env=env, pool="prefork", concurrency=2, queues=[INGEST_QUEUE]
    )
    yield worker
    worker.stop()


@pytest.fixture
def api(settings, glm_server, user):
    """This process queues uploads for the ingest worker and replies for the chat worker, and
    creates bases with the embedding model the worker uses."""
    settings.INGEST_TASK_QUEUE = INGEST_QUEUE
    settings.CHAT_TASK_QUEUE = CHAT_QUEUE
    settings.ZHIPUAI_API_KEY = TEST_KEY
    settings.ZHIPUAI_BASE_URL = glm_server.base_url
    settings.ZHIPUAI_EMBEDDING_DIMENSION = 256
    settings.KNOWLEDGE_INGEST_TIME_LIMIT = TIME_LIMIT
    settings.KNOWLEDGE_INGEST_MAX_ATTEMPTS = MAX_ATTEMPTS
    client = APIClient()
    client.force_authenticate(user)
    return client


def docx_bomb(paragraphs: int) -> bytes:
    """A valid .docx whose document.xml inflates to 36 bytes per paragraph (under the 200 MB
    the upload check allows) from a few hundred kilobytes; its tree needs ~500 bytes each."""
    blank = io.BytesIO()
    docx.Document().save(blank)
    source = zipfile.ZipFile(blank)
    head, tail = source.read("word/document.xml").split(b"<w:body>", 1)
    block = b"<w:p><w:r><w:t>x</w:t></w:r></w:p>" * 30_000
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                archive.writestr(item, source.read(item))
                continue
            with archive.open("word/document.xml", "w", force_zip64=True) as member:
                member.write(head + b"<w:body>")
                for _ in range(paragraphs // 30_000):
                    member.write(block)
                member.write(tail)
    return out.getvalue()


TIMED_OUT = f"Processing took longer than {TIME_LIMIT} s and was stopped."
OUT_OF_MEMORY = f"Processing needed more than {MEMORY_LIMIT_MB} MB of memory and was stopped."


def hostile_files() -> dict[str, tuple[bytes, str, str]]:
    """name: (content, the status it must end in, its error)."""
    return {
        "dots.txt": (b"." * 40_000 + b"a", "ready", ""),
        "padded-heading.md": (b"# a" + b" " * 100_000 + b"b\nbody text", "ready", ""),
        "one-line.txt": (b"word " * 200_000, "ready", ""),
        "nested.html": (b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000, "ready", ""),
        "giant-cell.csv": (
            b'name,notes\nx,"' + b"y" * 1_000_000 + b'"\n',
            "failed",
            "The CSV file is malformed and cannot be read.",
        ),
        "bomb.docx": (docx_bomb(2_100_000), "failed", OUT_OF_MEMORY),
    }


# Python's HTML parser takes quadratic time on unclosed tags (minutes for these): the time
# limit ends it.
SLOW = {"open-tags.html": (b"<a" * 150_000, "failed", TIMED_OUT)}


def _upload(api, base_id: int, files: dict[str, bytes]) -> dict[str, int]:
    response = api.post(
        f"/api/v1/knowledge/bases/{base_id}/documents/",
        {"file": [SimpleUploadedFile(name, content) for name, content in files.items()]},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    return {d["title"]: d["id"] for d in response.json()["documents"]}


class ReplyWatch(threading.Thread):
    """A user chatting over HTTP (the chat ASGI server, the chat worker) until stopped: one
    reply after another, each read as server-sent events, noting when every delta arrives."""

    def __init__(self, server_url: str, api_key: str) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(
            base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
        )
        self.replies: list[tuple[int, str, list[float]]] = []  # (id, question, arrivals)
        self.finish = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.finish.is_set():
                question = f"[[tokens:150]] keep talking {uuid.uuid4().hex}"
                sent = self.client.post("/api/v1/messages/", json={"content": question})
                reply_id = sent.json()["reply"]["id"]
                arrivals: list[float] = []
                self.replies.append((reply_id, question, arrivals))
                with self.client.stream("GET", f"/api/v1/messages/{reply_id}/stream") as events:
                    for line in events.iter_lines():
                        if line == "event: delta":
                            arrivals.append(time.monotonic())
                        elif line in ("event: done", "event: error"):
                            break
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.client.close()


def test_hostile_uploads_end_in_bounded_time_while_replies_stream_on(
    ingest_worker, chat_worker, chat_asgi, glm_server, api, user, settings
):
    glm_server.token_delay = 0.03
    files = hostile_files()
    base = api.post(
        "/api/v1/knowledge/bases/", {"name": "Hostile", "chunk_size": 4000}, format="json"
    ).json()
    # The vector collection exists before the clock starts (creating it takes seconds).
    get_vector_store().ensure_collection(model=base["embedding_model"], dimension=256)
    _, raw_key = api_key_create(user=user, name="chat")
    watch = ReplyWatch(chat_asgi.url, raw_key)
    watch.start()
    deadline = time.monotonic() + 30
    while not (watch.replies and watch.replies[0][2]):
        assert time.monotonic() < deadline and not watch.error, (watch.error, chat_worker.log())
        time.sleep(0.05)

    uploaded_at = time.monotonic()
    settings.KNOWLEDGE_INGEST_TIME_LIMIT = ROOM
    ids = _upload(api, base["id"], {name: content for name, (content, *_) in files.items()})
    settings.KNOWLEDGE_INGEST_TIME_LIMIT = TIME_LIMIT
    ids |= _upload(api, base["id"], {name: content for name, (content, *_) in SLOW.items()})
    files |= SLOW
    pending = Document.objects.filter(id__in=ids.values(), status__in=["pending", "processing"])
    while pending.exists():
        assert time.monotonic() - uploaded_at < BOUND, ingest_worker.log()
        time.sleep(0.2)
    ingested_at = time.monotonic()
    watch.finish.set()
    watch.join(60)

    documents = {d.title: d for d in Document.objects.filter(id__in=ids.values())}
    outcomes = {name: (documents[name].status, documents[name].error) for name in files}
    assert outcomes == {name: (status, error) for name, (_, status, error) in files.items()}
    assert documents["dots.txt"].chunk_count == 11  # 40,001 characters, no sentence end
    assert documents["one-line.txt"].chunk_count == 250
    assert documents["nested.html"].chunks.get().text == "deep"
    assert {d.attempts for d in documents.values()} == {0}

    # Replies streamed through the whole ingestion without a stall: 30 ms per token, deltas
    # batched over at most 250 ms. Ingestion in the chat worker's process stalled them for
    # as long as a regex held the interpreter (40,000 dots: over 30 s).
    assert watch.error is None and not watch.is_alive()
    assert watch.replies[0][2][0] < uploaded_at and watch.replies[-1][2][-1] > ingested_at
    for reply_id, question, _arrivals in watch.replies:
        reply = Message.objects.get(id=reply_id)
        assert reply.status == "completed"
        assert reply.content == reply_text([{"role": "user", "content": question}])
    gaps = [b - a for _, _, arrivals in watch.replies for a, b in pairwise(arrivals)]
    assert max(gaps) < MAX_GAP, sorted(gaps)[-5:]


def _pool_children(worker) -> list[psutil.Process]:
    return psutil.Process(worker.process.pid).children()


def _wait_running(document_id: int, attempt: int, worker) -> None:
    running = Document.objects.filter(id=document_id, status="processing", attempts=attempt)
    deadline = time.monotonic() + 60
    while not running.exists():
        assert time.monotonic() < deadline, (attempt, worker.log())
        time.sleep(0.05)


def _wait_failed(document_id: int, worker, timeout: float) -> Document:
    deadline = time.monotonic() + timeout
    while (document := Document.objects.get(id=document_id)).status != "failed":
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.1)
    return document


def test_a_run_stuck_in_native_code_is_killed_at_the_hard_limit(ingest_worker, api):
    """The soft limit's exception reaches Python code only; a child stuck in a C call (here
    stopped with SIGSTOP, which lets nothing run) is killed 5 s after it, and the worker's
    main process fails the document and does not hand it out again."""
    base = api.post("/api/v1/knowledge/bases/", {"name": "Stuck"}, format="json").json()
    (document_id,) = _upload(api, base["id"], {"stuck.html": b"<a" * 150_000}).values()
    _wait_running(document_id, 1, ingest_worker)
    started = time.monotonic()
    children = _pool_children(ingest_worker)
    for child in children:
        child.suspend()
    try:
        document = _wait_failed(document_id, ingest_worker, timeout=TIME_LIMIT + 5 + 30)
    finally:
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.resume()
    assert time.monotonic() - started >= TIME_LIMIT + 4
    assert (document.error, document.attempts) == (TIMED_OUT, 0)
    assert f"Hard time limit ({TIME_LIMIT + 5}s) exceeded" in ingest_worker.log(tail=None)
    time.sleep(3)  # acknowledged: it does not come back
    assert Document.objects.get(id=document_id).status == "failed"


def test_a_file_that_keeps_killing_its_worker_is_given_up(ingest_worker, api):
    """What the kernel's OOM killer (or a crash in a parser's C code) does to a pool child,
    done by the test: late acknowledgement hands the file back after each death, and the
    count of attempts ends it."""
    base = api.post("/api/v1/knowledge/bases/", {"name": "Killer"}, format="json").json()
    (document_id,) = _upload(api, base["id"], {"slow.html": b"<a" * 150_000}).values()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        _wait_running(document_id, attempt, ingest_worker)
        for child in _pool_children(ingest_worker):
            child.kill()

    document = _wait_failed(document_id, ingest_worker, timeout=60)
    assert document.error == (
        "Processing was cut short 3 times (its worker process ended, for example for lack of "
        "memory), so it was given up."
    )
    time.sleep(3)  # it does not come back
    assert Document.objects.get(id=document_id).status == "failed"
