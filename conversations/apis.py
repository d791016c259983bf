"""REST endpoints for conversations and messages (API.md); each parses, calls one service or
selector and renders. The SSE stream lives in `sse.py` (it has to be an async view)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from openspark.core.cache import (
    CONVERSATION_HISTORY,
    USER_CONVERSATIONS,
    cached_page_response,
    conversation_scope,
    user_scope,
)
from openspark.core.ids import IdField
from openspark.core.pagination import PageNumberPagination

from .selectors import (
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


class ConversationListCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        title = serializers.CharField(max_length=200, required=False, allow_blank=True)
        knowledge_base_ids = serializers.ListField(child=IdField(), required=False, max_length=50)

    @extend_schema(
        responses=ConversationOutputSerializer(many=True), operation_id="conversations_list"
    )
    def get(self, request):
        return cached_page_response(
            request=request,
            view=self,
            paginator=PageNumberPagination(),
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

    @extend_schema(
        responses=MessageOutputSerializer(many=True), operation_id="conversation_messages"
    )
    def get(self, request, conversation_id: int):
        # The caller is part of the key: another user's request misses, and the selector
        # answers 404 for a conversation that is not theirs.
        return cached_page_response(
            request=request,
            view=self,
            paginator=self.Pagination(),
            namespace=CONVERSATION_HISTORY,
            key=(request.user.id, conversation_id),
            scopes=conversation_scope(conversation_id),
            queryset=lambda: message_list_for_conversation(
                user=request.user, conversation_id=conversation_id
            ),
            serialize=lambda page: MessageOutputSerializer(page, many=True).data,
        )


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

    @extend_schema(
        request=InputSerializer, responses={202: SentSerializer}, operation_id="messages_send"
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
        request=None, responses={202: SentSerializer}, operation_id="messages_regenerate"
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
