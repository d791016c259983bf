"""Delivery through a real Celery worker and a real SMTP server on loopback (tests/smtp.py):
e-mailed once, retried with backoff when the relay is down, a dead letter once retries run
out, and a staff retry from the admin that succeeds."""

from __future__ import annotations

import time
import uuid

import pytest
from django.test import Client
from django_celery_results.models import TaskResult

from openspark.core.models import DeadLetter, Notification, TaskRecord
from openspark.core.services import notification_send, task_enqueue
from openspark.core.tasks import send_notification

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def _wait(predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    return None


def _task_state(task_id: str) -> str | None:
    return TaskResult.objects.filter(task_id=task_id).values_list("status", flat=True).first()


def _delivery_task(notification: Notification) -> str:
    return TaskRecord.objects.get(name="send_notification", args=[notification.id]).task_id


def test_notification_is_emailed_once_by_the_worker(celery_worker, smtp_server, user):
    body = f"report-{uuid.uuid4().hex}.pdf: 12 chunks"
    notification = notification_send(user=user, title="Document ready", body=body)
    task_id = _delivery_task(notification)
    # The same delivery queued a second time (a duplicate message) sends nothing more.
    duplicate = task_enqueue(task=send_notification, args=[notification.id], user=user)

    assert _wait(lambda: _task_state(task_id) == "SUCCESS"), celery_worker.log()
    assert _wait(lambda: _task_state(duplicate) == "SUCCESS"), celery_worker.log()
    (mail,) = smtp_server.to(user.email)
    assert mail.subject == "[OpenSpark] Document ready" and body in mail.text
    notification.refresh_from_db()
    assert notification.email_status == "sent" and notification.emailed_at


def test_a_delivery_retried_after_a_relay_failure_sends_once(celery_worker, smtp_server, user):
    smtp_server.refuse(1)
    notification = notification_send(user=user, title="Retried")
    task_id = _delivery_task(notification)

    assert _wait(lambda: _task_state(task_id) == "SUCCESS"), celery_worker.log()
    assert len(smtp_server.to(user.email)) == 1
    assert not DeadLetter.objects.exists()


def test_exhausted_retries_make_a_dead_letter_that_a_staff_retry_resolves(
    celery_worker, smtp_server, user, staff_user
):
    smtp_server.refuse(100)  # the relay stays down through every attempt (3 with 2 retries)
    notification = notification_send(user=user, title="Dead letter")
    task_id = _delivery_task(notification)

    dead = _wait(lambda: DeadLetter.objects.filter(task_id=task_id).first())
    assert dead, celery_worker.log()
    assert dead.name == "send_notification" and dead.args == [notification.id]
    assert dead.user == user and dead.attempts == 3 and dead.status == "open"
    assert "SMTPConnectError" in dead.error and "Traceback" in dead.traceback
    assert dead.options.get("queue")
    assert _wait(lambda: _task_state(task_id) == "FAILURE")
    assert smtp_server.to(user.email) == []
    notification.refresh_from_db()
    assert notification.email_status == "pending" and notification.read_at is None

    smtp_server.refuse(0)  # the relay is back; staff retry from the admin
    admin = Client()
    admin.force_login(staff_user)
    response = admin.post(
        "/admin/core/deadletter/",
        {"action": "retry", "_selected_action": [dead.id]},
    )
    assert response.status_code == 302

    assert _wait(lambda: _task_state(task_id) == "SUCCESS"), celery_worker.log()
    assert len(smtp_server.to(user.email)) == 1
    dead.refresh_from_db()
    assert dead.status == "retried" and dead.resolved_at
    record = TaskRecord.objects.get(task_id=task_id)
    assert record.user == user
