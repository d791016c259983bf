"""PostgreSQL dropping the product's connections (pg_terminate_backend on every connection to
the test database but this process's: what a database restart or a failover does), while
idle and while a reply streams. PostgreSQL only: SQLite has no server connections to drop.
Requests right after are answered (Django checks a reused connection before a request,
CONN_HEALTH_CHECKS), the streaming reply ends `completed` or `failed` with a reason, and the
next message and upload go through, with nothing restarted."""

import pytest
from django.db import connection

from conversations.models import Message
from openspark.llm.testserver import reply_text
from tests.faults.conftest import fault_client, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _drop_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _answer(question: str) -> str:
    return reply_text([{"role": "user", "content": question}])


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL pass only (DATABASE_URL): SQLite has no connections to drop")


def test_dropped_database_connections(stack, user, glm_server):
    api = fault_client(stack.asgi.url, user)
    first = api.settle_reply(api.send_message("before")["id"])
    assert first["status"] == "completed"  # the web server and the worker hold connections now

    assert _drop_connections() >= 2
    for path in ("/api/v1/me/", "/api/v1/conversations/", f"/api/v1/messages/{first['id']}/"):
        response = api.get(path)
        assert response.status_code == 200, (path, response.text, stack.asgi.log())
    reply = api.settle_reply(api.send_message("after the drop")["id"])
    assert (reply["status"], reply["content"]) == ("completed", _answer("after the drop"))

    # While a reply streams: the worker's connection goes between two checkpoints.
    glm_server.token_delay = 0.1
    streaming = api.send_message("[[tokens:40]] long answer")
    wait_until(Message.objects.filter(id=streaming["id"], status="streaming").exists, 30)
    assert _drop_connections() >= 1
    glm_server.token_delay = 0.0
    ended = api.settle_reply(streaming["id"], timeout=60)
    assert ended["status"] in ("completed", "failed"), (ended, stack.worker.log())
    if ended["status"] == "failed":
        assert ended["error"], ended

    base = api.create_base("After the drop")
    upload = api.upload(base["id"], "delta.txt", b"Delta rays are secondary electrons. " * 20)
    assert upload.status_code == 202, upload.text
    (document,) = upload.json()["documents"]
    assert api.settle_document(document["id"])["status"] == "ready"
    last = api.settle_reply(api.send_message("still there")["id"])
    assert (last["status"], last["content"]) == ("completed", _answer("still there"))
