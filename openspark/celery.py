"""Celery application; configuration lives in Django settings under the CELERY_ prefix."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openspark.settings.local")

app = Celery("openspark")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
