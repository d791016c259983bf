"""Celery application; configuration lives in Django settings under the CELERY_ prefix."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openspark.settings.local")

# Every task (shared_task included) is a ProductTask: one retry policy, records, dead letters.
app = Celery("openspark", task_cls="openspark.core.taskbase:ProductTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def route_task(name, args, kwargs, options, task=None, **kw):
    """The router named in CELERY_TASK_ROUTES: the queue of the tasks listed in
    TASK_QUEUE_SETTINGS, read when the task is sent; None sends it to the default queue."""
    from django.conf import settings

    setting = settings.TASK_QUEUE_SETTINGS.get(name)
    queue = getattr(settings, setting, "") if setting else ""
    return {"queue": queue} if queue else None
