"""Extra routes used only by tests: a view that crashes, to check the 500 shape."""

from django.urls import include, path
from rest_framework.views import APIView


class CrashApi(APIView):
    permission_classes = []

    def get(self, request):
        raise RuntimeError("boom: secret detail")


def crash_plain(request):
    raise RuntimeError("boom: secret detail")


urlpatterns = [
    path("api/v1/test-crash/", CrashApi.as_view()),
    path("api/v1/test-crash-plain/", crash_plain),
    path("", include("openspark.urls")),
]
