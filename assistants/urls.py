"""assistants API routes (under /api/v1/assistants/)."""

from django.urls import path

from .apis import AssistantDetailApi, AssistantListCreateApi, AssistantOptionsApi

urlpatterns = [
    path("", AssistantListCreateApi.as_view(), name="assistants"),
    path("options/", AssistantOptionsApi.as_view(), name="assistant-options"),
    path("<id:assistant_id>/", AssistantDetailApi.as_view(), name="assistant-detail"),
]
