"""Writes for cross-cutting records (task bookkeeping)."""

from __future__ import annotations

import uuid

from celery import Task
from django.db import transaction

from .models import Notification, TaskRecord


def task_id_new() -> str:
    return str(uuid.uuid4())


def task_enqueue(
    *,
    task: Task,
    args: list | tuple = (),
    user=None,
    kwargs: dict | None = None,
    task_id: str | None = None,
) -> str:
    """Record the task for its owner and queue it once the surrounding transaction commits,
    so the worker never reads rows that are not there yet. Returns the task id at once.
    `task_id`: one from task_id_new() already stored on the caller's row (saves an UPDATE)."""
    task_id = task_id or task_id_new()
    TaskRecord.objects.create(task_id=task_id, name=task.name, user=user)
    transaction.on_commit(
        lambda: task.apply_async(args=list(args), kwargs=kwargs or {}, task_id=task_id)
    )
    return task_id


def task_progress_set(*, task_id: str | None, progress: int) -> None:
    if task_id:
        TaskRecord.objects.filter(task_id=task_id).update(progress=max(0, min(100, progress)))


def notification_send(*, user, title: str, body: str = "", level: str = "info") -> Notification:
    """Store the notification and e-mail it from a worker after commit."""
    from .tasks import send_notification

    notification = Notification.objects.create(user=user, title=title, body=body, level=level)
    transaction.on_commit(lambda: send_notification.delay(notification.id))
    return notification


def notification_deliver(*, notification_id: int) -> bool:
    """E-mail a notification once; a redelivered task finds emailed_at set and does nothing."""
    from django.core.mail import send_mail
    from django.utils import timezone

    notification = Notification.objects.select_related("user").filter(id=notification_id).first()
    if notification is None or notification.emailed_at or not notification.user.email:
        return False
    send_mail(
        subject=f"[OpenSpark] {notification.title}",
        message=notification.body or notification.title,
        from_email=None,
        recipient_list=[notification.user.email],
    )
    notification.emailed_at = timezone.now()
    notification.save(update_fields=["emailed_at"])
    return True
