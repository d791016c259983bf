"""throttling API routes (under /api/v1/)."""

from django.urls import path

from .apis import RateLimitStatsApi, RateLimitStatusApi

urlpatterns = [
    path("rate-limit/status/", RateLimitStatusApi.as_view(), name="rate-limit-status"),
    path("rate-limit/stats/", RateLimitStatsApi.as_view(), name="rate-limit-stats"),
]
