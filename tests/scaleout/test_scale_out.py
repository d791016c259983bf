"""Scale-out on one machine: two ASGI servers (A, B), two Celery workers and beat against one
database, one Redis and a standalone Milvus server (tests/scaleout/conftest.py). What a user
does on one server is what they see on the other, whichever worker does the work, and a
worker killed with SIGKILL in the middle of a reply or a document leaves nothing stuck."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest
from django.conf import settings

from accounts.services import api_key_create
from conversations.models import Message
from knowledge.chunking import chunk_sections
from knowledge.models import Chunk, Document
from knowledge.parsing import parse_document
from openspark.llm.testserver import reply_text
from tests.factories import UserFactory
from tests.scaleout.conftest import (
    CONFIG_TTL,
    LEASE_SECONDS,
    STUCK_SECONDS,
    open_socket,
    reply_events,
    session_cookie,
    wait_for,
)
from throttling.models import Plan, TokenUsage

# Several servers and workers on one database is a PostgreSQL deployment; SQLite is the
# one-machine default, whose single writer lock makes five processes' periodic sweeps fail
# commits now and then. CI's PostgreSQL pass runs this module.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.e2e,
    pytest.mark.skipif(
        "postgresql" not in settings.DATABASES["default"]["ENGINE"],
        reason="scale-out runs on PostgreSQL (DATABASE_URL); SQLite is the one-machine default",
    ),
]


def api(server, raw_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {raw_key}"}, timeout=20
    )


def expected_reply(question: str) -> str:
    return reply_text([{"role": "user", "content": question}])


def assert_whole(events: list[dict], text: str) -> dict:
    """Every delta once, in order, then the saved reply whose text they spell."""
    *deltas, done = events
    assert [d["type"] for d in deltas] == ["reply.delta"] * len(deltas)
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert done["type"] == "reply.done", done
    assert done["message"]["status"] == "completed"
    assert "".join(d["delta"] for d in deltas) == done["message"]["content"] == text
    return done["message"]


def send(ws, content: str, conversation_id: int | None = None) -> dict:
    """Send a message over the socket; its `message.created`."""
    frame = {"type": "message.send", "content": content}
    if conversation_id:
        frame["conversation_id"] = conversation_id
    ws.send(json.dumps(frame))
    while (event := json.loads(ws.recv(timeout=15)))["type"] != "message.created":
        pass
    return event


def test_a_socket_on_a_gets_every_reply_whichever_worker_streams_it(scale, glm_server):
    glm_server.first_token_delay, glm_server.token_delay = 0.05, 0.02
    user = UserFactory()
    _key, raw = api_key_create(user=user, name="b")
    on_b = api(scale.b, raw)
    conversation_id = None
    took: dict[str, int] = {}
    with open_socket(scale.a, session_cookie(user)) as ws:
        # Sent in turn from the socket on A and over REST on B, into one conversation the
        # socket is in, until both workers have streamed replies (the broker hands them out
        # about in turn, so two or three replies do).
        for n in itertools.count():
            question = f"[[tokens:30]] question {n} about the tides"
            if n % 2 == 0:
                created = send(ws, question, conversation_id)
                conversation_id = created["conversation_id"]
                reply_id, task_id = created["reply"]["id"], created["task_id"]
            else:
                response = on_b.post(
                    "/api/v1/messages/",
                    json={"conversation_id": conversation_id, "content": question},
                )
                assert response.status_code == 202, response.text
                reply_id, task_id = response.json()["reply"]["id"], response.json()["task_id"]
            saved = assert_whole(reply_events(ws, reply_id), expected_reply(question))
            assert on_b.get(f"/api/v1/messages/{reply_id}/").json()["content"] == saved["content"]
            worker = scale.worker_of(task_id)
            took[worker.name] = took.get(worker.name, 0) + 1
            if (len(took) == 2 and n >= 1) or n == 11:
                break
    assert len(took) == 2, took


def test_a_users_limit_holds_across_both_servers(scale):
    Plan.objects.filter(tier=Plan.Tier.PRO).update(requests_per_minute=10)
    user = UserFactory(plan=Plan.objects.get(tier=Plan.Tier.PRO))
    _key, raw = api_key_create(user=user, name="limit")
    time.sleep(CONFIG_TTL + 0.2)  # both servers reload the limits (THROTTLE_CONFIG_TTL)
    clients = [api(scale.a, raw), api(scale.b, raw)]
    started = time.monotonic()
    responses = [clients[n % 2].get("/api/v1/conversations/") for n in range(16)]
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    # A token bucket of 10 a minute: 10 at once, then one more every 6 s.
    admitted = statuses.count(200)
    assert 10 <= admitted <= 10 + int(elapsed / 6), (statuses, elapsed)
    assert statuses[:10] == [200] * 10 and set(statuses[10:]) <= {200, 429}
    refused = [r for r in responses if r.status_code == 429]
    assert {str(r.url).split("/api")[0] for r in refused} == {scale.a.url, scale.b.url}
    for response in refused:
        body = response.json()
        assert body["error"]["code"] == "rate_limited" and body["error"]["message"]
        assert body["error"]["details"]["layer"] == "plan"
        assert response.headers["RateLimit-Policy"] == '"plan";q=10;w=60'
        assert int(response.headers["Retry-After"]) >= 1


def test_a_write_on_a_is_seen_by_the_next_read_on_b(scale):
    user = UserFactory()
    _key, raw = api_key_create(user=user, name="cache")
    servers = [api(scale.a, raw), api(scale.b, raw)]
    created = servers[0].post("/api/v1/conversations/", json={"title": "v0"})
    assert created.status_code == 201, created.text
    conversation_id = created.json()["id"]
    for n in range(1, 11):
        writer, reader = servers[n % 2], servers[(n + 1) % 2]
        # The reader's page is cached (and its ETag known) before the write.
        before = reader.get("/api/v1/conversations/")
        assert before.json()["results"][0]["title"] == f"v{n - 1}"
        etag = {"If-None-Match": before.headers["ETag"]}
        assert reader.get("/api/v1/conversations/", headers=etag).status_code == 304
        renamed = writer.patch(f"/api/v1/conversations/{conversation_id}/", json={"title": f"v{n}"})
        assert renamed.status_code == 200, renamed.text
        after = reader.get("/api/v1/conversations/", headers=etag)
        assert after.status_code == 200 and after.json()["results"][0]["title"] == f"v{n}"
        assert reader.get(f"/api/v1/conversations/{conversation_id}/").json()["title"] == f"v{n}"


QUOKKA = (
    "Quokkas are small marsupials living on Rottnest Island near Perth. They are nocturnal, "
    "eat grasses and leaves, and can survive long periods without drinking water."
)
KILN = (
    "A kiln fires clay at twelve hundred degrees; the potter glazes each bowl before the "
    "second firing and lets the kiln cool for a whole day before opening it."
)


def _wait_ready(client: httpx.Client, document_id: int, timeout: float) -> dict:
    """Waits on the database (polling the API would spend the user's request budget), then
    reads the document as the user does."""

    def settled():
        status = Document.objects.filter(id=document_id).values_list("status", flat=True)[0]
        return status in ("ready", "failed")

    wait_for(settled, timeout=timeout, what=f"document {document_id} to be processed")
    body = client.get(f"/api/v1/knowledge/documents/{document_id}/").json()
    assert body["status"] == "ready", body
    return body


def _vector_chunk_ids(scale, document_id: int) -> list[int]:
    store, ids = scale.vectors, []
    for collection in store.our_collections():
        rows = store.client.query(
            collection, filter=f"document_id == {document_id}", output_fields=["chunk_id"]
        )
        ids += [int(row["chunk_id"]) for row in rows]
    return sorted(ids)


def test_documents_uploaded_on_b_are_searchable_from_a(scale):
    user = UserFactory()
    _key, raw = api_key_create(user=user, name="docs")
    on_a, on_b = api(scale.a, raw), api(scale.b, raw)
    base = on_b.post("/api/v1/knowledge/bases/", json={"name": "Animals"}).json()
    quokkas = {"query": "where do quokkas live?", "knowledge_base_ids": [base["id"]]}
    # Searched on A before the documents exist: an empty ranking, cached on A's side.
    assert on_a.post("/api/v1/knowledge/search", json=quokkas).json()["results"] == []
    # Two files in one upload: two tasks, which the two workers take side by side.
    upload = on_b.post(
        f"/api/v1/knowledge/bases/{base['id']}/documents/",
        files=[
            ("file", ("quokka.txt", QUOKKA.encode(), "text/plain")),
            ("file", ("kiln.txt", KILN.encode(), "text/plain")),
        ],
    )
    assert upload.status_code == 202, upload.text
    ids = [document["id"] for document in upload.json()["documents"]]
    documents = dict(zip(("quokka", "kiln"), ids, strict=True))
    for document_id in documents.values():
        assert _wait_ready(on_a, document_id, timeout=30)["chunk_count"] == 1

    kiln = {**quokkas, "query": "how long does the kiln cool?"}
    for search, title, words in ((quokkas, "quokka", "Rottnest"), (kiln, "kiln", "glazes")):
        for mode in ("vector", "hybrid"):
            hits = on_a.post("/api/v1/knowledge/search", json={**search, "mode": mode}).json()
            assert hits["results"][0]["document_id"] == documents[title], (mode, hits)
            assert words in hits["results"][0]["snippet"]
    for document_id in documents.values():
        chunk_ids = list(Chunk.objects.filter(document_id=document_id).values_list("id", flat=True))
        assert _vector_chunk_ids(scale, document_id) == chunk_ids and len(chunk_ids) == 1


def test_a_reply_whose_worker_is_killed_ends_failed_with_a_reason(scale, glm_server):
    glm_server.first_token_delay, glm_server.token_delay = 0.05, 0.05
    user = UserFactory()
    cookie = session_cookie(user)
    with open_socket(scale.a, cookie) as ws:
        created = send(ws, "[[tokens:400]] a long story")
        reply_id = created["reply"]["id"]
        worker = scale.worker_of(created["task_id"])
        deltas = []
        while len(deltas) < 3:
            event = json.loads(ws.recv(timeout=15))
            if event["type"] == "reply.delta":
                deltas.append(event)
        reserved = TokenUsage.objects.filter(user=user).values_list("reserved_tokens", flat=True)
        assert reserved[0] > 0  # the reply holds its most tokens from the monthly quota
        worker.kill()
        killed_at = time.monotonic()
        # The sweep (beat, run by the other worker) fails it once the lease has lapsed.
        *more, end = reply_events(ws, reply_id, timeout=LEASE_SECONDS * 3 + 10)
    assert time.monotonic() - killed_at < LEASE_SECONDS * 3 + 10
    deltas += more
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert end["type"] == "reply.error", end
    assert end["code"] == "interrupted" and end["message"]
    reply = Message.objects.get(id=reply_id)
    assert (reply.status, reply.error_code) == ("failed", "interrupted") and reply.error
    # It keeps the text the socket was shown (the page re-renders the reply from the event).
    shown = "".join(d["delta"] for d in deltas)
    assert reply.content.startswith(shown) and end["reply"]["content"] == reply.content
    with httpx.Client(base_url=scale.b.url, headers={"Cookie": cookie}) as on_b:
        body = on_b.get(f"/api/v1/messages/{reply_id}/").json()
    assert body["status"] == "failed" and body["error"] == reply.error
    assert body["content"] == reply.content
    # Its reservation went back to the quota with it.
    assert [*reserved.all()] == [0] and reply.reserved_tokens == 0


def _long_text(paragraphs: int) -> str:
    return "\n\n".join(
        f"Logbook entry {n}. The keeper of lighthouse number {n} recorded the tide, the wind "
        f"from the {['north', 'south', 'east', 'west'][n % 4]}, three passing ships and a "
        f"heron on the rocks. The lamp burned {n * 7} litres of oil; the glass was cleaned "
        f"twice and the clockwork wound at dusk. Entry {n} ends with the weather for tomorrow."
        for n in range(paragraphs)
    )


def test_a_document_whose_worker_is_killed_ends_ready_without_duplicates(scale, glm_server):
    glm_server.embedding_delay = 0.4  # ten batches of eight: about four seconds of embedding
    user = UserFactory()
    _key, raw = api_key_create(user=user, name="docs")
    on_a, on_b = api(scale.a, raw), api(scale.b, raw)
    base = on_a.post("/api/v1/knowledge/bases/", json={"name": "Logbooks"}).json()
    content = _long_text(80).encode()
    upload = on_b.post(
        f"/api/v1/knowledge/bases/{base['id']}/documents/",
        files=[("file", ("logbook.txt", content, "text/plain"))],
    )
    assert upload.status_code == 202, upload.text
    [document] = upload.json()["documents"]
    worker = scale.worker_of(upload.json()["task_ids"][0])

    def embedding():
        progress = Document.objects.filter(id=document["id"]).values_list("progress", flat=True)
        return 10 < progress[0] < 90

    wait_for(embedding, timeout=30, what="the document to be half embedded", interval=0.05)
    worker.kill()

    ready = _wait_ready(on_a, document["id"], timeout=STUCK_SECONDS * 2 + 30)
    drafts = chunk_sections(
        parse_document(data=content, file_type="txt"),
        chunk_size=base["chunk_size"],
        chunk_overlap=base["chunk_overlap"],
    )
    assert len(drafts) > 40
    chunks = Chunk.objects.filter(document_id=document["id"])
    assert ready["chunk_count"] == chunks.count() == len(drafts)
    assert sorted(chunks.values_list("ordinal", flat=True)) == list(range(len(drafts)))
    assert [c.text for c in chunks.order_by("ordinal")] == [d.text for d in drafts]
    assert _vector_chunk_ids(scale, document["id"]) == sorted(c.id for c in chunks)
    # The second run was another worker's, queued again by the sweep.
    assert Document.objects.get(id=document["id"]).task_id != upload.json()["task_ids"][0]
    hits = on_a.post(
        "/api/v1/knowledge/search",
        json={"query": "lighthouse number 77 heron", "knowledge_base_ids": [base["id"]]},
    ).json()["results"]
    assert hits and hits[0]["document_id"] == document["id"]
