"""Staff APIs: statistics, warm-up, purge of a namespace."""

from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from openspark.core.errors import ApplicationError, NotFound
from openspark.core.ids import IdField
from openspark.core.services import task_enqueue

from .namespaces import RATE_LIMIT, UnknownNamespace
from .service import cache_purge
from .stats import stats_get
from .tasks import cache_warm_hot_documents, cache_warm_users


class NamespaceStatsSerializer(serializers.Serializer):
    name = serializers.CharField()
    ttl = serializers.IntegerField()
    hits = serializers.IntegerField()
    misses = serializers.IntegerField()
    hit_ratio = serializers.FloatField(allow_null=True)
    sets = serializers.IntegerField()
    stale_sets_skipped = serializers.IntegerField()
    coalesced = serializers.IntegerField()
    warmed = serializers.IntegerField()
    lock_timeouts = serializers.IntegerField()
    errors = serializers.IntegerField()
    latency_ms_avg = serializers.FloatField(allow_null=True)
    latency_ms_p50 = serializers.FloatField(allow_null=True)
    latency_ms_p95 = serializers.FloatField(allow_null=True)


class CacheStatsApi(APIView):
    permission_classes = [IsAdminUser]

    class OutputSerializer(serializers.Serializer):
        namespaces = NamespaceStatsSerializer(many=True)
        version_bumps = serializers.DictField(child=serializers.IntegerField())
        redis = serializers.DictField()

    @extend_schema(responses=OutputSerializer, operation_id="cache_stats")
    def get(self, request):
        return Response(self.OutputSerializer(stats_get()).data)


class CacheWarmApi(APIView):
    permission_classes = [IsAdminUser]

    class InputSerializer(serializers.Serializer):
        user_ids = serializers.ListField(child=IdField(), required=False, max_length=10_000)
        recent_users = serializers.IntegerField(
            required=False,
            min_value=0,
            max_value=10_000,
            default=0,
            help_text="Also warm the users who logged in most recently.",
        )
        documents = serializers.BooleanField(
            required=False, default=False, help_text="Warm the most read documents."
        )

        def validate(self, attrs):
            if not (attrs.get("user_ids") or attrs["recent_users"] or attrs["documents"]):
                raise serializers.ValidationError(
                    _("Name something to warm: user_ids, recent_users or documents.")
                )
            return attrs

    class OutputSerializer(serializers.Serializer):
        task_ids = serializers.ListField(child=serializers.CharField())
        users = serializers.IntegerField()

    @extend_schema(
        request=InputSerializer, responses={202: OutputSerializer}, operation_id="cache_warm"
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user_ids = list(dict.fromkeys(data.get("user_ids", [])))
        if data["recent_users"]:
            recent = (
                get_user_model()
                .objects.filter(is_active=True, last_login__isnull=False)
                .order_by("-last_login")
                .values_list("id", flat=True)[: data["recent_users"]]
            )
            user_ids += [uid for uid in recent if uid not in user_ids]
        task_ids = []
        if user_ids:
            task_ids.append(task_enqueue(task=cache_warm_users, args=[user_ids], user=request.user))
        if data["documents"]:
            task_ids.append(task_enqueue(task=cache_warm_hot_documents, user=request.user))
        return Response(
            self.OutputSerializer({"task_ids": task_ids, "users": len(user_ids)}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class CachePurgeApi(APIView):
    permission_classes = [IsAdminUser]

    class OutputSerializer(serializers.Serializer):
        namespace = serializers.CharField()
        deleted_keys = serializers.IntegerField()

    @extend_schema(responses={200: OutputSerializer}, operation_id="cache_purge")
    def delete(self, request, namespace: str):
        if namespace == RATE_LIMIT:
            raise ApplicationError(
                _("Rate-limit counters belong to the limiter and expire within a minute."),
                code="validation_error",
            )
        try:
            deleted = cache_purge(namespace)
        except UnknownNamespace:
            raise NotFound(_("No cache namespace with this name.")) from None
        body = {"namespace": namespace, "deleted_keys": deleted}
        return Response(self.OutputSerializer(body).data)
