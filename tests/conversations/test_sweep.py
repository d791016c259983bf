"""The beat sweep: a reply whose task was lost is queued again; one whose worker vanished
mid-stream is failed as interrupted; replies a worker holds are left alone."""

import datetime as dt

import pytest
from django.utils import timezone

from conversations import realtime
from conversations.models import Message
from conversations.services import message_send, replies_sweep
from openspark.core.models import TaskRecord

pytestmark = pytest.mark.django_db


def _age(message: Message, *, seconds: int, field: str) -> None:
    Message.objects.filter(pk=message.pk).update(
        **{field: timezone.now() - dt.timedelta(seconds=seconds)}
    )


def test_lost_pending_reply_is_queued_again(user, settings):
    settings.CHAT_PENDING_REQUEUE_SECONDS = 60
    _question, reply, first_task = message_send(user=user, content="hello")
    assert replies_sweep() == {"requeued": 0, "interrupted": 0}  # too young
    _age(reply, seconds=120, field="created_at")

    assert replies_sweep() == {"requeued": 1, "interrupted": 0}
    reply.refresh_from_db()
    assert reply.status == "pending"
    assert reply.task_id != first_task
    assert TaskRecord.objects.filter(task_id=reply.task_id, user=user).exists()


def test_streaming_reply_without_a_worker_is_failed_as_interrupted(user, settings):
    settings.CHAT_REPLY_LEASE_SECONDS = 30
    _question, reply, _task = message_send(user=user, content="hello")
    Message.objects.filter(pk=reply.pk).update(status="streaming")
    _age(reply, seconds=60, field="updated_at")

    assert replies_sweep() == {"requeued": 0, "interrupted": 1}
    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == ("failed", "interrupted")
    assert reply.error


def test_replies_a_worker_holds_are_left_alone(user, settings):
    settings.CHAT_PENDING_REQUEUE_SECONDS = 60
    settings.CHAT_REPLY_LEASE_SECONDS = 30
    _question, reply, task_id = message_send(user=user, content="hello")
    _age(reply, seconds=120, field="created_at")
    assert realtime.reply_lease_acquire(message_id=reply.id)
    try:
        assert replies_sweep() == {"requeued": 0, "interrupted": 0}
    finally:
        realtime.reply_lease_release(message_id=reply.id)
    reply.refresh_from_db()
    assert reply.task_id == task_id


def test_an_interrupted_reply_keeps_the_text_its_readers_were_sent(user, settings):
    """The worker died after sending batches it had not checkpointed: the failed reply keeps
    them, or the page showing them would be emptied by the reply.error that ends it."""
    settings.CHAT_REPLY_LEASE_SECONDS = 30
    _question, reply, _task = message_send(user=user, content="hello")
    realtime.reply_log_reset(message_id=reply.id)
    Message.objects.filter(pk=reply.pk).update(status="streaming", content="Echo", last_seq=1)
    for seq, delta in enumerate(["Echo", ": hel", "lo."], start=1):
        realtime.reply_log_append(message_id=reply.id, seq=seq, delta=delta)
    realtime.reply_lease_release(message_id=reply.id)
    _age(reply, seconds=60, field="updated_at")

    assert replies_sweep() == {"requeued": 0, "interrupted": 1}
    reply.refresh_from_db()
    assert (reply.status, reply.error_code) == ("failed", "interrupted")
    assert (reply.content, reply.last_seq) == ("Echo: hello.", 3)
