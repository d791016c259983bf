"""Celery tasks of the chat pipeline: ids in, the services re-read and re-check everything.

Both are idempotent (see `reply_generate`), so `acks_late` redelivery after a lost worker is
safe. Neither retries by itself: provider retries happen inside the stream, before the first
delta (openspark.llm.retry), and a half-shown reply must not be restarted behind the reader.
A reply that ended `failed` fails its task too (FAILURE with the reply's error, no dead
letter: regenerating is the user's retry); `stopped` and `skipped` are successes.
"""

from celery import shared_task

from openspark.core.taskbase import TaskFailed

from .models import Message
from .selectors import message_get
from .services import (
    conversation_title_generate,
    replies_sweep,
    reply_finished_notify,
    reply_generate,
)


@shared_task(name="generate_ai_response", acks_late=True, ignore_result=False)
def generate_ai_response(message_id: int) -> str:
    status = reply_generate(message_id=message_id)
    reply_finished_notify(message_id=message_id, status=status)
    if status == Message.Status.FAILED:
        reply = message_get(message_id=message_id)
        raise TaskFailed(reply.error if reply else status)
    return status


@shared_task(name="generate_conversation_title", acks_late=True)
def generate_conversation_title(conversation_id: int) -> str:
    return conversation_title_generate(conversation_id=conversation_id)


@shared_task(name="replies_sweep")
def sweep_replies() -> dict[str, int]:
    return replies_sweep()
