"""Output shapes shared by the REST API, the websocket events and the SSE stream, so a message
looks the same whichever way a client reads it."""

from __future__ import annotations

from rest_framework import serializers

from .models import Conversation, Message


class CitationSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    document_id = serializers.JSONField()
    document_title = serializers.CharField()
    chunk_id = serializers.JSONField()
    snippet = serializers.CharField()
    score = serializers.FloatField()


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()


class FeedbackSerializer(serializers.Serializer):
    rating = serializers.IntegerField()
    comment = serializers.CharField(allow_blank=True)


class TimingsSerializer(serializers.Serializer):
    queue_ms = serializers.IntegerField(allow_null=True)
    first_token_ms = serializers.IntegerField(allow_null=True)
    total_ms = serializers.IntegerField(allow_null=True)


class MessageOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    conversation_id = serializers.IntegerField()
    role = serializers.CharField()
    reply_to_id = serializers.IntegerField(allow_null=True)
    content = serializers.CharField()
    status = serializers.CharField()
    last_seq = serializers.IntegerField()
    citations = CitationSerializer(many=True)
    usage = serializers.SerializerMethodField()
    provider = serializers.CharField()
    model = serializers.CharField()
    error_code = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    feedback = serializers.SerializerMethodField()
    knowledge_base_ids = serializers.ListField(child=serializers.IntegerField())
    client_id = serializers.CharField()
    task_id = serializers.CharField()
    timings = TimingsSerializer()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_usage(self, message: Message) -> dict[str, int]:
        return {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
        }

    def get_error_code(self, message: Message) -> str | None:
        return message.error_code or None

    def get_error(self, message: Message) -> str | None:
        return message.error or None

    def get_feedback(self, message: Message) -> dict | None:
        if message.feedback_rating is None:
            return None
        return {"rating": message.feedback_rating, "comment": message.feedback_comment}


class ConversationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    knowledge_base_ids = serializers.SerializerMethodField()
    assistant_id = serializers.IntegerField(
        allow_null=True, help_text="The conversation's assistant; null: the default assistant."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_knowledge_base_ids(self, conversation: Conversation) -> list[int]:
        # Prefetched by the selectors; sorted so clients can compare lists.
        return sorted(kb.id for kb in conversation.knowledge_bases.all())


_DATETIME = serializers.DateTimeField()
_CITATION_KEYS = ("index", "document_id", "document_title", "chunk_id", "snippet", "score")


def _citation(citation: dict) -> dict:
    out = {key: citation[key] for key in _CITATION_KEYS}
    out["index"] = int(out["index"])
    out["document_title"], out["snippet"] = str(out["document_title"]), str(out["snippet"])
    out["score"] = float(out["score"])
    return out


def _or_none(value, convert):
    return None if value is None else convert(value)


def message_data(message: Message) -> dict:
    """A message as plain JSON types: exactly `MessageOutputSerializer(message).data` (a test
    holds them equal), built directly. It is on the path to every socket event and every 202
    (three times per send); DRF's serializer costs ~2 ms a message on a slow core, this ~0.1."""
    when = _DATETIME.to_representation
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "role": _or_none(message.role, str),
        "reply_to_id": message.reply_to_id,
        "content": _or_none(message.content, str),
        "status": _or_none(message.status, str),
        "last_seq": _or_none(message.last_seq, int),
        "citations": [_citation(c) for c in message.citations or []],
        "usage": {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
        },
        "provider": _or_none(message.provider, str),
        "model": _or_none(message.model, str),
        "error_code": message.error_code or None,
        "error": message.error or None,
        "feedback": None
        if message.feedback_rating is None
        else {"rating": message.feedback_rating, "comment": message.feedback_comment},
        "knowledge_base_ids": [int(i) for i in message.knowledge_base_ids or []],
        "client_id": _or_none(message.client_id, str),
        "task_id": _or_none(message.task_id, str),
        "timings": message.timings,
        "created_at": _or_none(message.created_at, when),
        "updated_at": _or_none(message.updated_at, when),
    }


def conversation_data(conversation: Conversation) -> dict:
    return dict(ConversationOutputSerializer(conversation).data)


def message_created_event(*, message: Message, reply: Message, client_id: str = "") -> dict:
    """`message.created`: a question and its pending reply (websocket event)."""
    return {
        "type": "message.created",
        "conversation_id": message.conversation_id,
        "message": message_data(message),
        "reply": message_data(reply),
        "task_id": reply.task_id,
        "client_id": client_id,
    }


def reply_final_event(reply: Message) -> dict:
    """`reply.error` for a failed reply, else `reply.done` with the saved message."""
    if reply.status == Message.Status.FAILED:
        return {
            "type": "reply.error",
            "message_id": reply.id,
            "conversation_id": reply.conversation_id,
            "code": reply.error_code,
            "message": reply.error,
            "reply": message_data(reply),
        }
    return {"type": "reply.done", "message": message_data(reply)}
