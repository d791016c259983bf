from celery import shared_task

from .services import notification_deliver


@shared_task(
    name="send_notification",
    autoretry_for=(OSError,),
    retry_backoff=True,
    retry_kwargs={"max_retries": 5},
)
def send_notification(notification_id: int) -> bool:
    return notification_deliver(notification_id=notification_id)
