"""conversations API routes (under /api/v1/)."""

from django.urls import path

from .apis import (
    ConversationDetailApi,
    ConversationExportApi,
    ConversationListCreateApi,
    ConversationMessagesApi,
    MessageDetailApi,
    MessageFeedbackApi,
    MessageRegenerateApi,
    MessageSendApi,
    MessageStopApi,
)
from .sse import message_stream

urlpatterns = [
    path("conversations/", ConversationListCreateApi.as_view(), name="conversations"),
    path(
        "conversations/<id:conversation_id>/",
        ConversationDetailApi.as_view(),
        name="conversation-detail",
    ),
    path(
        "conversations/<id:conversation_id>/messages/",
        ConversationMessagesApi.as_view(),
        name="conversation-messages",
    ),
    path(
        "conversations/<id:conversation_id>/export",
        ConversationExportApi.as_view(),
        name="conversation-export",
    ),
    path("messages/", MessageSendApi.as_view(), name="messages"),
    path("messages/<id:message_id>/", MessageDetailApi.as_view(), name="message-detail"),
    path("messages/<id:message_id>/stream", message_stream, name="message-stream"),
    path("messages/<id:message_id>/stop", MessageStopApi.as_view(), name="message-stop"),
    path(
        "messages/<id:message_id>/regenerate",
        MessageRegenerateApi.as_view(),
        name="message-regenerate",
    ),
    path(
        "messages/<id:message_id>/feedback",
        MessageFeedbackApi.as_view(),
        name="message-feedback",
    ),
]
