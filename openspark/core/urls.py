from django.urls import path

from .apis import TaskStatusApi

urlpatterns = [
    path("tasks/<str:task_id>/", TaskStatusApi.as_view(), name="task-status"),
]
