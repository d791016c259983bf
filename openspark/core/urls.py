from django.urls import path

from .apis import TaskStatusApi
from .cache.apis import CachePurgeApi, CacheStatsApi, CacheWarmApi

urlpatterns = [
    path("tasks/<str:task_id>/", TaskStatusApi.as_view(), name="task-status"),
    path("cache/stats/", CacheStatsApi.as_view(), name="cache-stats"),
    path("cache/warm/", CacheWarmApi.as_view(), name="cache-warm"),
    path("cache/<str:namespace>/", CachePurgeApi.as_view(), name="cache-purge"),
]
