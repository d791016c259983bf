"""send_notification through a real Celery worker: stored, e-mailed once, idempotent."""

import time
import uuid

import pytest

from openspark.core.models import Notification
from openspark.core.services import notification_deliver, notification_send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def _wait(predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_notification_is_emailed_by_the_worker(celery_worker, user, settings):
    body = f"report-{uuid.uuid4().hex}.pdf: 12 chunks"
    notification = notification_send(user=user, title="Document ready", body=body)
    assert _wait(lambda: Notification.objects.get(pk=notification.pk).emailed_at), (
        celery_worker.log()
    )
    mails = list(settings.EMAIL_FILE_PATH.glob("*.log"))
    assert sum(body in path.read_text() for path in mails) == 1
    # A redelivered task does not e-mail twice.
    assert notification_deliver(notification_id=notification.pk) is False
