"""REST endpoints for conversations and messages (API.md); each parses, calls one service or
selector and renders. The SSE stream lives in `sse.py` (it has to be an async view)."""

from __future__ import annotations

import json

from django.http import HttpResponse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView

from openspark.core.cache import (
    CONVERSATION_HISTORY,
    USER_CONVERSATIONS,
    cached_page_response,
    conversation_scope,
    user_scope,
)
from openspark.core.errors import ApplicationError
from openspark.core.ids import IdField
from openspark.core.pagination import PageNumberPagination
from openspark.core.schema import ErrorSerializer

from .export import conversation_json, conversation_markdown
from .selectors import (
    conversation_export_get,
    conversation_get_for_user,
    conversation_list_for_user,
    message_get_for_user,
    message_list_for_conversation,
)
from .serializers import ConversationOutputSerializer, MessageOutputSerializer, message_data
from .services import (
    conversation_create,
    conversation_delete,
    conversation_update,
    message_feedback_set,
    message_send,
    reply_regenerate,
    reply_stop,
)

_BUSY_409 = OpenApiResponse(
    ErrorSerializer,
    description="`conflict`: a reply is still being generated in this conversation.",
)


class ConversationListCreateApi(APIView):
    # The schema documents the page envelope and its query parameters from this.
    pagination_class = PageNumberPagination

    class InputSerializer(serializers.Serializer):
        title = serializers.CharField(max_length=200, required=False, allow_blank=True)
        knowledge_base_ids = serializers.ListField(child=IdField(), required=False, max_length=50)
        assistant_id = IdField(
            required=False, allow_null=True, help_text="Empty: the default assistant."
        )

    @extend_schema(
        responses=ConversationOutputSerializer(many=True), operation_id="conversations_list"
    )
    def get(self, request):
        return cached_page_response(
            request=request,
            view=self,
            paginator=self.pagination_class(),
            namespace=USER_CONVERSATIONS,
            key=(request.user.id,),
            scopes=user_scope(request.user.id),
            queryset=lambda: conversation_list_for_user(user=request.user),
            serialize=lambda page: ConversationOutputSerializer(page, many=True).data,
        )

    @extend_schema(
        request=InputSerializer,
        responses={201: ConversationOutputSerializer},
        operation_id="conversations_create",
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = conversation_create(user=request.user, **serializer.validated_data)
        return Response(
            ConversationOutputSerializer(conversation).data, status=status.HTTP_201_CREATED
        )


class ConversationDetailApi(APIView):
    class InputSerializer(serializers.Serializer):
        title = serializers.CharField(max_length=200, required=False, allow_blank=True)
        knowledge_base_ids = serializers.ListField(child=IdField(), required=False, max_length=50)

    @extend_schema(responses=ConversationOutputSerializer, operation_id="conversations_get")
    def get(self, request, conversation_id: int):
        conversation = conversation_get_for_user(user=request.user, conversation_id=conversation_id)
        return Response(ConversationOutputSerializer(conversation).data)

    @extend_schema(
        request=InputSerializer,
        responses=ConversationOutputSerializer,
        operation_id="conversations_update",
    )
    def patch(self, request, conversation_id: int):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = conversation_update(
            user=request.user, conversation_id=conversation_id, **serializer.validated_data
        )
        return Response(ConversationOutputSerializer(conversation).data)

    @extend_schema(responses={204: None}, operation_id="conversations_delete")
    def delete(self, request, conversation_id: int):
        conversation_delete(user=request.user, conversation_id=conversation_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConversationMessagesApi(APIView):
    class Pagination(PageNumberPagination):
        page_size = 50

    pagination_class = Pagination

    @extend_schema(
        responses=MessageOutputSerializer(many=True), operation_id="conversation_messages"
    )
    def get(self, request, conversation_id: int):
        # The caller is part of the key: another user's request misses, and the selector
        # answers 404 for a conversation that is not theirs.
        return cached_page_response(
            request=request,
            view=self,
            paginator=self.pagination_class(),
            namespace=CONVERSATION_HISTORY,
            key=(request.user.id, conversation_id),
            scopes=conversation_scope(conversation_id),
            queryset=lambda: message_list_for_conversation(
                user=request.user, conversation_id=conversation_id
            ),
            serialize=lambda page: MessageOutputSerializer(page, many=True).data,
        )


class FirstRendererNegotiation(BaseContentNegotiation):
    """Errors in JSON whatever the query says: DRF reads `?format=` as a renderer choice, and
    the export takes `format` as its own parameter (DRF's documented custom negotiation)."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


EXPORT_FORMATS = {"md": "text/markdown; charset=utf-8", "json": "application/json"}


class ConversationExportApi(APIView):
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "format", str, enum=list(EXPORT_FORMATS), default="md", description="File type."
            )
        ],
        responses={
            (200, "text/markdown"): OpenApiResponse(
                OpenApiTypes.STR, description="Messages, each reply with a Sources section."
            ),
            (200, "application/json"): OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="`format`, `exported_at`, `conversation`, `assistant` (or null), "
                "`messages` (message objects, with `citations`).",
            ),
        },
        operation_id="conversations_export",
    )
    def get(self, request, conversation_id: int):
        conversation, messages = conversation_export_get(
            user=request.user, conversation_id=conversation_id
        )
        kind = request.query_params.get("format", "md")
        if kind not in EXPORT_FORMATS:
            raise ApplicationError(
                _("The format must be md or json."), details={"format": ["invalid_choice"]}
            )
        if kind == "json":
            data = conversation_json(conversation=conversation, messages=messages)
            body = json.dumps(data, ensure_ascii=False, indent=2)
        else:
            body = conversation_markdown(conversation=conversation, messages=messages)
        response = HttpResponse(body, content_type=EXPORT_FORMATS[kind])
        filename = f"conversation-{conversation.id}.{kind}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class SentSerializer(serializers.Serializer):
    message = MessageOutputSerializer(help_text="The question.")
    reply = MessageOutputSerializer()
    task_id = serializers.CharField()


class MessageSendApi(APIView):
    class InputSerializer(serializers.Serializer):
        conversation_id = IdField(required=False, allow_null=True)
        content = serializers.CharField()
        knowledge_base_ids = serializers.ListField(child=IdField(), required=False, max_length=50)
        client_id = serializers.CharField(max_length=64, required=False, allow_blank=True)
        assistant_id = IdField(
            required=False,
            allow_null=True,
            help_text="For a new conversation (no `conversation_id`): its assistant.",
        )

    @extend_schema(
        request=InputSerializer,
        responses={202: SentSerializer, 409: _BUSY_409},
        operation_id="messages_send",
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message, reply, task_id = message_send(user=request.user, **serializer.validated_data)
        return Response(
            {
                "message": message_data(message),
                "reply": message_data(reply),
                "task_id": task_id,
            },
            status=status.HTTP_202_ACCEPTED,
        )


class MessageDetailApi(APIView):
    @extend_schema(responses=MessageOutputSerializer, operation_id="messages_get")
    def get(self, request, message_id: int):
        message = message_get_for_user(user=request.user, message_id=message_id)
        return Response(message_data(message))


class MessageStopApi(APIView):
    @extend_schema(request=None, responses=MessageOutputSerializer, operation_id="messages_stop")
    def post(self, request, message_id: int):
        reply = reply_stop(user=request.user, message_id=message_id)
        return Response(message_data(reply))


class MessageRegenerateApi(APIView):
    @extend_schema(
        request=None,
        responses={202: SentSerializer, 409: _BUSY_409},
        operation_id="messages_regenerate",
    )
    def post(self, request, message_id: int):
        reply, task_id = reply_regenerate(user=request.user, message_id=message_id)
        return Response(
            {
                "message": message_data(reply.reply_to),
                "reply": message_data(reply),
                "task_id": task_id,
            },
            status=status.HTTP_202_ACCEPTED,
        )


class MessageFeedbackApi(APIView):
    class InputSerializer(serializers.Serializer):
        rating = serializers.ChoiceField(choices=[1, -1])
        comment = serializers.CharField(required=False, allow_blank=True, max_length=2000)

    @extend_schema(
        request=InputSerializer, responses=MessageOutputSerializer, operation_id="messages_feedback"
    )
    def post(self, request, message_id: int):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = message_feedback_set(
            user=request.user, message_id=message_id, **serializer.validated_data
        )
        return Response(message_data(message))
