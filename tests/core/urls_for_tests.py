"""Extra routes used only by tests: views that crash or lose the database, to check the shapes."""

from django.db import OperationalError
from django.urls import include, path
from rest_framework.views import APIView


class CrashApi(APIView):
    permission_classes = []

    def get(self, request):
        raise RuntimeError("boom: secret detail")


def crash_plain(request):
    raise RuntimeError("boom: secret detail")


class DatabaseDownApi(APIView):
    permission_classes = []

    def get(self, request):
        # What Django raises when PostgreSQL refuses connections or the pool times out.
        raise OperationalError("connection failed: secret detail")


def database_down_plain(request):
    raise OperationalError("database is locked: secret detail")


urlpatterns = [
    path("api/v1/test-crash/", CrashApi.as_view()),
    path("api/v1/test-crash-plain/", crash_plain),
    path("api/v1/test-db-down/", DatabaseDownApi.as_view()),
    path("api/v1/test-db-down-plain/", database_down_plain),
    path("", include("openspark.urls")),
]
