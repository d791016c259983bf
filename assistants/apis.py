"""Assistants API (under /api/v1/assistants/): thin views over selectors and services."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from openspark.core.ids import IdField
from openspark.core.pagination import PageNumberPagination
from openspark.llm import chat_models_available, provider_status

from .models import ICONS, Assistant
from .selectors import (
    assistant_can_edit,
    assistant_creation_allowed,
    assistant_get_for_user,
    assistant_list_usable,
)
from .services import (
    MAX_QUESTION_CHARS,
    MAX_SUGGESTED_QUESTIONS,
    assistant_create,
    assistant_delete,
    assistant_update,
    max_tokens_limit,
)

# Shown only to whoever may edit the assistant: its prompt and knowledge are its owner's.
EDITOR_FIELDS = ("system_prompt", "knowledge_base_ids", "provider", "model", "temperature",
                 "max_tokens", "fallback_message", "score_threshold", "shared_with")  # fmt: skip


class AssistantOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    icon = serializers.CharField()
    opening_message = serializers.CharField()
    suggested_questions = serializers.ListField(child=serializers.CharField())
    sources_only = serializers.BooleanField()
    visibility = serializers.ChoiceField(choices=Assistant.Visibility.choices)
    owner = serializers.CharField(source="owner.username")
    is_owner = serializers.SerializerMethodField()
    can_edit = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    system_prompt = serializers.CharField(required=False, help_text="Editors only.")
    knowledge_base_ids = serializers.SerializerMethodField(help_text="Editors only.")
    provider = serializers.CharField(required=False, help_text="Editors only; empty: default.")
    model = serializers.CharField(required=False, help_text="Editors only; empty: default.")
    temperature = serializers.FloatField(required=False, allow_null=True)
    max_tokens = serializers.IntegerField(required=False, allow_null=True)
    fallback_message = serializers.CharField(required=False, help_text="Editors only.")
    score_threshold = serializers.FloatField(required=False, allow_null=True)
    shared_with = serializers.SerializerMethodField(help_text="Editors only: usernames.")

    def _user(self):
        return self.context["request"].user

    def get_is_owner(self, assistant) -> bool:
        return assistant.owner_id == self._user().id

    def get_can_edit(self, assistant) -> bool:
        return assistant_can_edit(user=self._user(), assistant=assistant)

    def get_knowledge_base_ids(self, assistant) -> list[int]:
        return sorted(kb.id for kb in assistant.knowledge_bases.all())

    def get_shared_with(self, assistant) -> list[str]:
        return sorted(u.username for u in assistant.shared_with.all())

    def to_representation(self, assistant):
        data = super().to_representation(assistant)
        if not data["can_edit"]:
            for field in EDITOR_FIELDS:
                data.pop(field, None)
        return data


class AssistantInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    icon = serializers.CharField(max_length=16, required=False)
    system_prompt = serializers.CharField(max_length=8000, required=False, allow_blank=True)
    knowledge_base_ids = serializers.ListField(child=IdField(), required=False, max_length=50)
    provider = serializers.CharField(max_length=40, required=False, allow_blank=True)
    model = serializers.CharField(max_length=100, required=False, allow_blank=True)
    temperature = serializers.FloatField(required=False, allow_null=True)
    max_tokens = serializers.IntegerField(required=False, allow_null=True)
    opening_message = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    suggested_questions = serializers.ListField(
        child=serializers.CharField(max_length=MAX_QUESTION_CHARS, allow_blank=True),
        required=False,
        max_length=MAX_SUGGESTED_QUESTIONS,
    )
    sources_only = serializers.BooleanField(required=False)
    score_threshold = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="Lowest similarity of a passage found by meaning only; null: the bases' own.",
    )
    fallback_message = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=Assistant.Visibility.choices, required=False)
    shared_with = serializers.ListField(
        child=serializers.CharField(max_length=150),
        required=False,
        max_length=200,
        help_text="Usernames that may use a `listed` assistant.",
    )


def _output(request, assistant, **kwargs) -> Response:
    assistant = assistant_get_for_user(user=request.user, assistant_id=assistant.id)
    return Response(
        AssistantOutputSerializer(assistant, context={"request": request}).data, **kwargs
    )


class AssistantListCreateApi(APIView):
    # The schema documents the page envelope and its query parameters from this.
    pagination_class = PageNumberPagination

    @extend_schema(responses=AssistantOutputSerializer(many=True), operation_id="assistants_list")
    def get(self, request):
        assistants = assistant_list_usable(user=request.user).prefetch_related(
            "knowledge_bases", "shared_with"
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(assistants.order_by("name", "id"), request, self)
        data = AssistantOutputSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        request=AssistantInputSerializer,
        responses={201: AssistantOutputSerializer},
        operation_id="assistants_create",
    )
    def post(self, request):
        serializer = AssistantInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        assistant = assistant_create(user=request.user, **serializer.validated_data)
        return _output(request, assistant, status=status.HTTP_201_CREATED)


class AssistantDetailApi(APIView):
    class UpdateSerializer(AssistantInputSerializer):
        name = serializers.CharField(max_length=100, required=False)

    @extend_schema(responses=AssistantOutputSerializer, operation_id="assistants_get")
    def get(self, request, assistant_id: int):
        assistant = assistant_get_for_user(user=request.user, assistant_id=assistant_id)
        return _output(request, assistant)

    @extend_schema(
        request=UpdateSerializer,
        responses=AssistantOutputSerializer,
        operation_id="assistants_update",
    )
    def patch(self, request, assistant_id: int):
        serializer = self.UpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        assistant = assistant_update(
            user=request.user, assistant_id=assistant_id, **serializer.validated_data
        )
        return _output(request, assistant)

    @extend_schema(responses={204: None}, operation_id="assistants_delete")
    def delete(self, request, assistant_id: int):
        assistant_delete(user=request.user, assistant_id=assistant_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AssistantOptionsApi(APIView):
    class ModelSerializer(serializers.Serializer):
        provider = serializers.CharField()
        model = serializers.CharField()

    class OutputSerializer(serializers.Serializer):
        can_create = serializers.BooleanField(help_text="Staff, or the plan allows assistants.")
        default_model = serializers.DictField(help_text="`name`, `model`, `offline`.")
        models = serializers.ListField(child=serializers.DictField())
        icons = serializers.ListField(child=serializers.CharField())
        max_tokens_limit = serializers.IntegerField()

    @extend_schema(responses=OutputSerializer, operation_id="assistants_options")
    def get(self, request):
        return Response(
            {
                "can_create": assistant_creation_allowed(user=request.user),
                "default_model": provider_status(),
                "models": [
                    {"provider": m.provider, "model": m.model} for m in chat_models_available()
                ],
                "icons": list(ICONS),
                "max_tokens_limit": max_tokens_limit(),
            }
        )
