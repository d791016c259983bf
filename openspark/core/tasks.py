"""Celery entry points of core: ids in, the services re-read and re-check."""

from celery import shared_task

from .services import notification_deliver, tasks_expire


@shared_task(name="send_notification", acks_late=True, autoretry_for=(OSError,))
def send_notification(notification_id: int) -> bool:
    """E-mail one notification (in-app delivery happened when it was stored). SMTP and
    network errors (OSError) are retried with the product's backoff; idempotent."""
    return notification_deliver(notification_id=notification_id)


@shared_task(name="tasks_expire")
def tasks_expire_task() -> dict:
    return tasks_expire()
