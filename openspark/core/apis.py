from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .selectors import task_status_get_for_user


class TaskStatusApi(APIView):
    class OutputSerializer(serializers.Serializer):
        task_id = serializers.CharField()
        name = serializers.CharField()
        state = serializers.CharField()
        progress = serializers.IntegerField()
        result = serializers.JSONField(allow_null=True)
        error = serializers.CharField(allow_null=True)
        created_at = serializers.DateTimeField()
        finished_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(responses=OutputSerializer, operation_id="task_status")
    def get(self, request, task_id: str):
        status = task_status_get_for_user(task_id=task_id, user=request.user)
        return Response(self.OutputSerializer(status).data)
