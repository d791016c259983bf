from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from openspark.core.pagination import PageNumberPagination
from openspark.core.schema import ErrorSerializer
from throttling.selectors import next_month_start
from throttling.services import limiter_usage_get

from .permissions import BrowserSessionOnly
from .selectors import api_key_list, user_profile_get
from .services import api_key_create, api_key_revoke


class PlanOutputSerializer(serializers.Serializer):
    tier = serializers.CharField()
    name = serializers.CharField()
    requests_per_minute = serializers.IntegerField()
    endpoint_limits = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Requests/min per endpoint group: conversations, messages (sending), "
        "knowledge, polling (reads of messages and tasks); see docs/throttling.md.",
    )
    monthly_token_quota = serializers.IntegerField()
    storage_quota_bytes = serializers.IntegerField(help_text="0 = unlimited.")
    document_quota = serializers.IntegerField(help_text="0 = unlimited.")
    knowledge_base_quota = serializers.IntegerField(help_text="0 = unlimited.")


class MeApi(APIView):
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        email = serializers.EmailField(allow_blank=True)
        is_staff = serializers.BooleanField()
        date_joined = serializers.DateTimeField()
        plan = PlanOutputSerializer()
        tokens = serializers.DictField(
            help_text="used_this_month, reserved (held by replies in progress), quota "
            "(0 = unlimited), remaining (quota - used - reserved), resets_at."
        )
        knowledge = serializers.DictField(
            child=serializers.DictField(child=serializers.IntegerField()),
            help_text="storage_bytes, documents, knowledge_bases: each {used, limit} "
            "(limit 0 = unlimited), over the knowledge bases the caller owns.",
        )
        usage = serializers.DictField(
            help_text="Per rate-limit layer: limit, used, remaining, reset (s) this minute."
        )

    @extend_schema(responses=OutputSerializer, operation_id="me")
    def get(self, request):
        profile = user_profile_get(user=request.user)
        resets_at = next_month_start()
        profile["tokens"]["resets_at"] = resets_at
        profile["usage"] = limiter_usage_get(request=request)
        return Response(self.OutputSerializer(profile).data)


class ApiKeyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    is_active = serializers.BooleanField()


# What the schema says of the key-management operations (BrowserSessionOnly).
KEY_MANAGEMENT = {
    "auth": [{"cookieAuth": []}],
    "description": "Only from a signed-in browser session (cookie + CSRF), as the account page "
    "does; a request authenticated with an API key gets 403 `permission_denied`, so a leaked "
    "key cannot mint or revoke keys.",
}
_KEY_MANAGEMENT_403 = OpenApiResponse(
    ErrorSerializer, description="`permission_denied`: authenticated with an API key."
)


class ApiKeyListCreateApi(APIView):
    permission_classes = [IsAuthenticated, BrowserSessionOnly]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        expires_at = serializers.DateTimeField(required=False, allow_null=True)

        def validate_expires_at(self, value):
            if value is not None and value <= timezone.now():
                raise serializers.ValidationError("Must be in the future.")
            return value

    class CreatedSerializer(ApiKeyOutputSerializer):
        key = serializers.CharField(help_text="The key itself; shown only in this response.")

    # The schema documents the page envelope and its query parameters from this.
    pagination_class = PageNumberPagination

    @extend_schema(
        responses={200: ApiKeyOutputSerializer(many=True), 403: _KEY_MANAGEMENT_403},
        operation_id="api_keys_list",
        **KEY_MANAGEMENT,
    )
    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(api_key_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(ApiKeyOutputSerializer(page, many=True).data)

    @extend_schema(
        request=InputSerializer,
        responses={201: CreatedSerializer, 403: _KEY_MANAGEMENT_403},
        operation_id="api_keys_create",
        **KEY_MANAGEMENT,
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, raw_key = api_key_create(user=request.user, **serializer.validated_data)
        data = ApiKeyOutputSerializer(key).data | {"key": raw_key}
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(APIView):
    permission_classes = [IsAuthenticated, BrowserSessionOnly]

    @extend_schema(
        responses={204: None, 403: _KEY_MANAGEMENT_403},
        operation_id="api_keys_revoke",
        **KEY_MANAGEMENT,
    )
    def delete(self, request, key_id: int):
        api_key_revoke(user=request.user, key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
