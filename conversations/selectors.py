"""Permission-checked reads: the only way views, consumers and tasks reach conversations and
messages. Another user's conversation or message is "not found", never their data."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils.translation import gettext as _

from openspark.core.cache import cache_enabled
from openspark.core.errors import NotFound
from throttling.selectors import plan_for_user

from .models import Conversation, Message


def conversation_list_for_user(*, user) -> QuerySet[Conversation]:
    """The user's conversations, most recently active first."""
    return (
        Conversation.objects.filter(owner=user)
        .prefetch_related("knowledge_bases")
        .order_by("-updated_at", "-id")
    )


def conversation_get_for_user(*, user, conversation_id: int) -> Conversation:
    conversation = (
        Conversation.objects.filter(owner=user, id=conversation_id)
        .prefetch_related("knowledge_bases")
        .first()
    )
    if conversation is None:
        raise NotFound(_("No conversation with this id."))
    return conversation


def conversation_export_get(*, user, conversation_id: int) -> tuple[Conversation, list[Message]]:
    """The conversation (with its assistant) and every message, oldest first; 404 when the
    conversation is not the user's."""
    conversation = (
        Conversation.objects.select_related("assistant")
        .prefetch_related("knowledge_bases")
        .filter(owner=user, id=conversation_id)
        .first()
    )
    if conversation is None:
        raise NotFound(_("No conversation with this id."))
    return conversation, list(conversation.messages.order_by("id"))


def message_list_for_conversation(*, user, conversation_id: int) -> QuerySet[Message]:
    """The history, oldest first; 404 when the conversation is not the user's."""
    conversation_get_for_user(user=user, conversation_id=conversation_id)
    return Message.objects.filter(conversation_id=conversation_id).order_by("id")


def message_get_for_user(*, user, message_id: int) -> Message:
    message = (
        Message.objects.select_related("conversation")
        .filter(id=message_id, conversation__owner=user)
        .first()
    )
    if message is None:
        raise NotFound(_("No message with this id."))
    return message


def replies_unfinished(*, conversation_id: int) -> list[Message]:
    """Replies still pending or streaming in a conversation (at most one, by the send rule)."""
    return list(
        Message.objects.filter(
            conversation_id=conversation_id,
            role=Message.Role.ASSISTANT,
            status__in=[Message.Status.PENDING, Message.Status.STREAMING],
        ).order_by("id")
    )


def message_get(*, message_id: int) -> Message | None:
    """Unchecked read for code that already authorised the caller (workers, SSE after auth)."""
    return Message.objects.filter(id=message_id).first()


def ai_response_cache_enabled(*, user) -> bool:
    """Caching on, and the user's plan allows cached answers (staff switch per plan)."""
    return cache_enabled() and bool(plan_for_user(user).ai_response_cache_enabled)
