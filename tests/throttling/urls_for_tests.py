"""No-op views under the endpoint-group prefixes (their real views are built elsewhere), and
a view that reserves one token of the monthly quota the way the chat service reserves a reply's."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from throttling.quota import tokens_reserve


class NoopApi(APIView):
    def get(self, request):
        return Response({"ok": True})

    def post(self, request):
        return Response({"ok": True}, status=201)


class QuotaApi(APIView):
    def post(self, request):
        tokens_reserve(user=request.user, tokens=1)
        return Response({"ok": True}, status=201)


class UnthrottledApi(APIView):
    throttle_classes = []

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [
    path("api/v1/conversations/_t/", NoopApi.as_view()),
    path("api/v1/messages/_t/", NoopApi.as_view()),
    path("api/v1/knowledge/_t/", NoopApi.as_view()),
    path("api/v1/_t/quota/", QuotaApi.as_view()),
    path("api/v1/_t/unthrottled/", UnthrottledApi.as_view()),
    path("", include("openspark.urls")),
]
