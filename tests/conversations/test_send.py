"""What one send writes and announces (the send path's statement count is its latency under
load: docs/performance.md, chat)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import realtime
from conversations.models import Message
from conversations.services import message_send
from openspark.core.models import TaskRecord

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch) -> list[dict]:
    events: list[dict] = []
    monkeypatch.setattr(realtime, "publish", lambda **kwargs: events.append(kwargs))
    return events


def test_a_new_conversation_is_not_announced_an_existing_one_is(user, published):
    message, reply, task_id = message_send(user=user, content="first")
    # Nobody can listen to a conversation that did not exist before the send.
    assert published == []
    reply.refresh_from_db()
    assert reply.task_id == task_id and TaskRecord.objects.filter(task_id=task_id).exists()
    Message.objects.filter(id=reply.id).update(status=Message.Status.COMPLETED)

    before = message.conversation.updated_at
    second, reply2, _ = message_send(
        user=user, content="second", conversation_id=message.conversation_id
    )
    (event,) = published
    assert event["conversation_id"] == message.conversation_id
    assert event["event"]["type"] == "message.created"
    assert event["event"]["reply"]["id"] == reply2.id
    second.conversation.refresh_from_db()
    assert second.conversation.updated_at > before  # moved to the top of the list


def test_a_send_to_a_new_conversation_is_one_read_and_one_write_transaction(user, published):
    message_send(user=user, content="warm")  # the limiter's configuration snapshot loads
    with CaptureQueriesContext(connection) as queries:
        message_send(user=user, content="hello")
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # In one transaction: conversation, question, the month's token usage read and the
    # reply's reservation (one conditional UPDATE), the reply (with its task id) and the task
    # record; no UPDATE afterwards.
    assert statements.count("SELECT") == 1
    assert statements.count("INSERT") == 4
    (update,) = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert "tokenusage" in update and "reserved_tokens" in update
