from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Notification
from .pagination import PageNumberPagination
from .selectors import (
    TASK_STATES,
    notification_list_for_user,
    notification_preferences_get,
    notification_unread_count,
    task_list_for_user,
    task_state_get,
    task_status_get_for_user,
)
from .serializers import NotificationSerializer
from .services import (
    notification_mark_read,
    notification_preferences_update,
    notifications_mark_all_read,
)


class TaskOutputSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    name = serializers.CharField()
    state = serializers.ChoiceField(choices=TASK_STATES)
    progress = serializers.IntegerField()
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    user = serializers.CharField(allow_null=True, help_text="The owner's username.")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class TaskListApi(APIView):
    # The schema documents the page envelope and its query parameters from this.
    pagination_class = PageNumberPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("name", str, description="Task name, e.g. vectorize_document."),
            OpenApiParameter("state", str, enum=TASK_STATES),
            OpenApiParameter("user", str, description="Staff only: the owner's username."),
        ],
        responses=TaskOutputSerializer(many=True),
        operation_id="tasks_list",
    )
    def get(self, request):
        params = request.query_params
        records = task_list_for_user(
            user=request.user,
            name=params.get("name", ""),
            state=params.get("state", ""),
            username=params.get("user", ""),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(records, request, view=self)
        data = [task_state_get(record=record) for record in page]
        return paginator.get_paginated_response(TaskOutputSerializer(data, many=True).data)


class TaskStatusApi(APIView):
    @extend_schema(responses=TaskOutputSerializer, operation_id="task_status")
    def get(self, request, task_id: str):
        status = task_status_get_for_user(task_id=task_id, user=request.user)
        return Response(TaskOutputSerializer(status).data)


class NotificationPagination(PageNumberPagination):
    def get_paginated_response_schema(self, schema):
        paginated = super().get_paginated_response_schema(schema)
        paginated["properties"]["unread_count"] = {"type": "integer"}
        paginated["required"] = [*paginated.get("required", []), "unread_count"]
        return paginated


class NotificationListApi(APIView):
    # The schema documents the page envelope (with `unread_count`) from this.
    pagination_class = NotificationPagination

    @extend_schema(
        parameters=[OpenApiParameter("unread", bool, description="1: unread ones only.")],
        responses=NotificationSerializer(many=True),
        operation_id="notifications_list",
        description="Newest first. The page also carries `unread_count`.",
    )
    def get(self, request):
        unread = request.query_params.get("unread", "") in ("1", "true", "yes")
        notifications = notification_list_for_user(user=request.user, unread=unread)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(notifications, request, view=self)
        response = paginator.get_paginated_response(NotificationSerializer(page, many=True).data)
        response.data["unread_count"] = notification_unread_count(user=request.user)
        return response


class NotificationReadOutputSerializer(serializers.Serializer):
    notification = NotificationSerializer()
    unread_count = serializers.IntegerField()


class NotificationReadApi(APIView):
    @extend_schema(
        request=None,
        responses=NotificationReadOutputSerializer,
        operation_id="notification_read",
    )
    def post(self, request, notification_id: int):
        notification = notification_mark_read(user=request.user, notification_id=notification_id)
        return Response(
            {
                "notification": NotificationSerializer(notification).data,
                "unread_count": notification_unread_count(user=request.user),
            }
        )


class NotificationReadAllApi(APIView):
    class OutputSerializer(serializers.Serializer):
        marked = serializers.IntegerField()
        unread_count = serializers.IntegerField()

    @extend_schema(request=None, responses=OutputSerializer, operation_id="notifications_read_all")
    def post(self, request):
        marked = notifications_mark_all_read(user=request.user)
        return Response(
            {"marked": marked, "unread_count": notification_unread_count(user=request.user)}
        )


class NotificationPreferencesApi(APIView):
    class InputSerializer(serializers.Serializer):
        email = serializers.DictField(
            child=serializers.BooleanField(), help_text="{kind: wanted by e-mail}"
        )

    class OutputSerializer(serializers.Serializer):
        email = serializers.DictField(
            child=serializers.BooleanField(), help_text="{kind: wanted by e-mail}"
        )
        labels = serializers.DictField(child=serializers.CharField())
        has_email_address = serializers.BooleanField()

    def _data(self, user) -> dict:
        email = notification_preferences_get(user=user)
        return {
            "email": email,
            "labels": {kind: str(Notification.Kind(kind).label) for kind in email},
            "has_email_address": bool(user.email),
        }

    @extend_schema(responses=OutputSerializer, operation_id="notification_preferences")
    def get(self, request):
        return Response(self.OutputSerializer(self._data(request.user)).data)

    @extend_schema(
        request=InputSerializer,
        responses=OutputSerializer,
        operation_id="notification_preferences_update",
        description="Kinds not named keep their setting.",
    )
    def patch(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        notification_preferences_update(user=request.user, email=serializer.validated_data["email"])
        return Response(self.OutputSerializer(self._data(request.user)).data)
