"""The worker killed with SIGKILL (the OOM killer, a lost node): its process gone at once, no
clean shutdown, its message left unacknowledged in the broker (redelivered only after the
visibility timeout, an hour). A reply it was streaming ends `failed` as interrupted once its
lease lapses and the beat sweep runs (never stuck in `streaming`); a document it was
ingesting is queued again by the beat sweep and ends `ready` with each chunk once, in the
database and in Milvus. A new worker takes over; nothing else is restarted. (A prefork pool
child killed mid-document is redelivered at once, acks_late + reject_on_worker_lost: see
tests/e2e/test_hostile_uploads.py, whose memory bomb kills its child.)"""

import os
import signal
import time

import pytest
from django.conf import settings

from conversations.models import Message
from knowledge.models import Chunk, Document
from knowledge.vectorstore import VectorStore
from openspark.llm.testserver import reply_text
from tests.faults.conftest import fault_client, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 4  # CHAT_REPLY_LEASE_SECONDS of the stack (tests/faults/conftest.py)


def _kill_worker(stack) -> None:
    os.kill(stack.worker.process.pid, signal.SIGKILL)
    stack.worker.process.wait(10)
    stack.start_worker()


def test_worker_killed_mid_reply(stack, user, glm_server):
    api = fault_client(stack.asgi.url, user)
    glm_server.token_delay = 0.1
    reply = api.send_message("[[tokens:80]] a long answer")
    wait_until(
        Message.objects.filter(id=reply["id"], status="streaming", content__gt="").exists, 30
    )
    _kill_worker(stack)
    glm_server.token_delay = 0.0

    time.sleep(LEASE_SECONDS + 1)
    stack.beat_sends("replies_sweep")
    ended = api.settle_reply(reply["id"], timeout=60)
    assert (ended["status"], ended["error_code"]) == ("failed", "interrupted"), ended
    assert ended["error"] == "The reply was interrupted. Please regenerate it."
    assert ended["content"]  # what readers saw is kept
    after = api.settle_reply(api.send_message("and now")["id"])
    assert (after["status"], after["content"]) == (
        "completed",
        reply_text([{"role": "user", "content": "and now"}]),
    )


def test_worker_killed_mid_ingestion(stack, user, glm_server):
    api = fault_client(stack.asgi.url, user)
    base = api.create_base("Killed mid-ingestion")
    text = "".join(f"Paragraph {i} is about isotope number {i} and its half-life. " * 6 + "\n\n"
                   for i in range(120))  # fmt: skip
    glm_server.embedding_delay = 0.5  # ~90 chunks, 16 per call: a few seconds of embedding
    upload = api.upload(base["id"], "isotopes.txt", text.encode())
    assert upload.status_code == 202, upload.text
    (document,) = upload.json()["documents"]
    wait_until(
        Document.objects.filter(id=document["id"], status="processing", progress__gt=10).exists,
        60,
        "never started embedding",
        interval=0.02,
    )
    _kill_worker(stack)
    glm_server.embedding_delay = 0.0
    assert Document.objects.get(id=document["id"]).status == "processing"

    time.sleep(3.5)  # past KNOWLEDGE_STUCK_AFTER_SECONDS
    stack.beat_sends("knowledge_sweep")
    ready = api.settle_document(document["id"], timeout=90)
    assert ready["status"] == "ready", (ready, stack.worker.log())
    chunks = Chunk.objects.filter(document_id=document["id"])
    ordinals = list(chunks.values_list("ordinal", flat=True))
    assert ready["chunk_count"] == len(ordinals) == len(set(ordinals)) > 10
    store = VectorStore(uri=stack.env["MILVUS_URI"], prefix=settings.KNOWLEDGE_COLLECTION_PREFIX)
    try:
        vectors = 0
        for collection in store.our_collections():
            store.load(collection)
            vectors += store.count(
                collection=collection, expression=f"document_id == {document['id']}"
            )
        assert vectors == len(ordinals), store.our_collections()  # each chunk once in Milvus too
    finally:
        store.close()
