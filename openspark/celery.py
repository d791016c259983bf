"""Celery application; configuration lives in Django settings under the CELERY_ prefix."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openspark.settings.local")

# Every task (shared_task included) is a ProductTask: one retry policy, records, dead letters.
app = Celery("openspark", task_cls="openspark.core.taskbase:ProductTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
