"""Writes for cross-cutting records (task bookkeeping)."""

from __future__ import annotations

import uuid

from celery import Task
from django.db import transaction

from .models import TaskRecord


def task_enqueue(
    *, task: Task, args: list | tuple = (), user=None, kwargs: dict | None = None
) -> str:
    """Record the task for its owner and queue it once the surrounding transaction commits,
    so the worker never reads rows that are not there yet. Returns the task id at once."""
    task_id = str(uuid.uuid4())
    TaskRecord.objects.create(task_id=task_id, name=task.name, user=user)
    transaction.on_commit(
        lambda: task.apply_async(args=list(args), kwargs=kwargs or {}, task_id=task_id)
    )
    return task_id


def task_progress_set(*, task_id: str | None, progress: int) -> None:
    if task_id:
        TaskRecord.objects.filter(task_id=task_id).update(progress=max(0, min(100, progress)))
