"""`message_data` builds the message shape by hand (it is on every socket event and 202):
it must stay exactly what the documented serializer gives, for every kind of message."""

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from conversations.models import Conversation, Message
from conversations.serializers import MessageOutputSerializer, message_data

pytestmark = pytest.mark.django_db


def _messages(user) -> list[Message]:
    conversation = Conversation.objects.create(owner=user, title="t")
    question = Message.objects.create(
        conversation=conversation,
        role=Message.Role.USER,
        content="问题 with ünïcode",
        knowledge_base_ids=[3, 1],
        client_id="c-1",
    )
    pending = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=question,
        status=Message.Status.PENDING,
    )
    now = timezone.now()
    completed = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=question,
        status=Message.Status.COMPLETED,
        content="答案 [1]",
        last_seq=7,
        citations=[
            {
                "index": 1,
                "document_id": 9,
                "document_title": "Handbook",
                "chunk_id": "9:0",
                "snippet": "…",
                "score": 1,  # an int in the JSON column: the serializer makes it a float
                "extra": "dropped",
            }
        ],
        prompt_tokens=12,
        completion_tokens=34,
        provider="zhipuai",
        model="glm-4",
        feedback_rating=1,
        feedback_comment="good",
        task_id="abc",
        started_at=now,
        first_token_at=now + dt.timedelta(milliseconds=250),
        finished_at=now + dt.timedelta(seconds=2),
    )
    failed = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=question,
        status=Message.Status.FAILED,
        error_code="timeout",
        error="The model did not answer in time.",
    )
    return [question, pending, completed, failed]


def test_message_data_is_exactly_the_serializers_output(user):
    for message in _messages(user):
        fresh = Message.objects.get(pk=message.pk)  # as read back from the database too
        for instance in (message, fresh):
            expected = MessageOutputSerializer(instance).data
            assert message_data(instance) == expected
            # Byte for byte as rendered (1 == 1.0 in Python, not in JSON), key order included.
            render = JSONRenderer().render
            assert render(message_data(instance)) == render(expected)
