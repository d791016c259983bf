from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from redis import RedisError
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from openspark.core.errors import DependencyUnavailable

from .identity import request_identity
from .limiter import stats_flush
from .rules import listed_get
from .selectors import limiter_config_get, limiter_stats_get
from .services import limiter_status_get


class LayerStateSerializer(serializers.Serializer):
    layer = serializers.CharField()
    limit = serializers.IntegerField()
    remaining = serializers.IntegerField()
    reset = serializers.FloatField(help_text="Seconds until the full budget is back.")
    window = serializers.IntegerField(source="period", help_text="Seconds.")
    algorithm = serializers.CharField()
    shadow = serializers.BooleanField()


class RateLimitStatusSerializer(serializers.Serializer):
    authenticated = serializers.BooleanField()
    ip = serializers.CharField()
    allow_listed = serializers.BooleanField()
    blocked = serializers.BooleanField()
    degraded = serializers.BooleanField(help_text="Redis unreachable: no live figures.")
    layers = LayerStateSerializer(many=True)


class RateLimitStatusApi(APIView):
    """The caller's own remaining budget per layer (anonymous callers: their IP's)."""

    permission_classes = [AllowAny]

    @extend_schema(responses=RateLimitStatusSerializer, operation_id="rate_limit_status")
    def get(self, request):
        identity = request_identity(request)
        listed = listed_get(config=limiter_config_get(), identity=identity)
        states = limiter_status_get(identity=identity)
        data = {
            "authenticated": identity.user_id is not None,
            "ip": identity.ip,
            "allow_listed": listed == "allow",
            "blocked": listed == "deny",
            "degraded": states is None,
            "layers": states or [],
        }
        return Response(RateLimitStatusSerializer(data).data)


class RateLimitStatsApi(APIView):
    """Staff: limiter counters per layer per minute, top limited callers, latency, alerts."""

    permission_classes = [IsAdminUser]

    class InputSerializer(serializers.Serializer):
        minutes = serializers.IntegerField(min_value=1, max_value=60, default=10)

    @extend_schema(
        parameters=[InputSerializer],
        responses=OpenApiTypes.OBJECT,
        operation_id="rate_limit_stats",
    )
    def get(self, request):
        params = self.InputSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        try:
            stats_flush()  # this process's last second of counters (others: within 1 s)
            stats = limiter_stats_get(minutes=params.validated_data["minutes"])
        except RedisError:
            raise DependencyUnavailable(_("Redis is unreachable; no limiter statistics.")) from None
        return Response(stats)
