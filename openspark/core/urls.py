from django.urls import path

from .apis import (
    NotificationListApi,
    NotificationPreferencesApi,
    NotificationReadAllApi,
    NotificationReadApi,
    TaskListApi,
    TaskStatusApi,
)
from .cache.apis import CachePurgeApi, CacheStatsApi, CacheWarmApi

urlpatterns = [
    path("tasks/", TaskListApi.as_view(), name="task-list"),
    path("tasks/<str:task_id>/", TaskStatusApi.as_view(), name="task-status"),
    path("notifications/", NotificationListApi.as_view(), name="notification-list"),
    path("notifications/read-all", NotificationReadAllApi.as_view(), name="notification-read-all"),
    path(
        "notifications/preferences/",
        NotificationPreferencesApi.as_view(),
        name="notification-preferences",
    ),
    path(
        "notifications/<id:notification_id>/read",
        NotificationReadApi.as_view(),
        name="notification-read",
    ),
    path("cache/stats/", CacheStatsApi.as_view(), name="cache-stats"),
    path("cache/warm/", CacheWarmApi.as_view(), name="cache-warm"),
    path("cache/<str:namespace>/", CachePurgeApi.as_view(), name="cache-purge"),
]
