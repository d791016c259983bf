"""Reads for task status and notifications; only the caller's own, staff see all tasks.

Task states (`GET tasks/{id}/`, `GET tasks/`): Celery's PENDING, STARTED, RETRY, SUCCESS,
FAILURE, REVOKED from the result backend, and LOST — ours: no worker has reported on the
task for TASK_LOST_AFTER_SECONDS since it was queued (or, once started, for the hard time
limit plus that), so it was lost with a worker or the broker; staff can queue it again.
"""

from __future__ import annotations

import json
from datetime import timedelta

from django.conf import settings
from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _
from django_celery_results.models import TaskResult

from .errors import NotFound
from .models import Notification, NotificationPreference, TaskRecord

FINISHED_STATES = {"SUCCESS", "FAILURE", "REVOKED"}
TASK_STATES = ["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "LOST"]

# --- tasks ------------------------------------------------------------------------------------


def tasks_with_state(queryset: QuerySet[TaskRecord], *, now=None) -> QuerySet[TaskRecord]:
    """Records annotated with `result_status`, `result_done` and the derived `state`."""
    now = now or timezone.now()
    lost_after = timedelta(seconds=settings.TASK_LOST_AFTER_SECONDS)
    running_for = lost_after + timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT or 0)
    result = TaskResult.objects.filter(task_id=OuterRef("task_id"))
    unreported = Q(result_status__isnull=True) | Q(result_status="PENDING")
    return queryset.annotate(
        result_status=Subquery(result.values("status")[:1], output_field=CharField()),
        result_done=Subquery(result.values("date_done")[:1], output_field=DateTimeField()),
        result_payload=Subquery(result.values("result")[:1], output_field=TextField()),
    ).annotate(
        state=Case(
            When(unreported & Q(updated_at__lt=now - lost_after), then=Value("LOST")),
            When(unreported, then=Value("PENDING")),
            When(
                Q(result_status__in=["STARTED", "RETRY"], result_done__lt=now - running_for),
                then=Value("LOST"),
            ),
            default=Coalesce("result_status", Value("PENDING")),
            output_field=CharField(),
        )
    )


def task_list_for_user(
    *, user, name: str = "", state: str = "", username: str = ""
) -> QuerySet[TaskRecord]:
    """The caller's tasks, newest first; staff see everyone's and may filter by user."""
    records = TaskRecord.objects.select_related("user").order_by("-created_at", "-id")
    if not user.is_staff:
        records = records.filter(user=user)
    elif username:
        records = records.filter(user__username=username)
    if name:
        records = records.filter(name=name)
    records = tasks_with_state(records)
    if state:
        records = records.filter(state=state.upper())
    return records


def task_state_get(*, record: TaskRecord) -> dict:
    """`record` (annotated or not) as the API shows it."""
    if not hasattr(record, "state"):
        record = tasks_with_state(TaskRecord.objects.filter(pk=record.pk)).get()
    state = record.state
    error = payload = None
    if state == "FAILURE":
        error = _readable_error(record.result_payload)
    elif state == "SUCCESS":
        payload = _json_or_text(record.result_payload)
    elif state == "LOST":
        error = _(
            "No worker has reported on this task for too long: it was lost (a worker or the "
            "broker restarted). Staff can queue it again."
        )
    elif state == "REVOKED":
        error = _("The task was cancelled.")
    return {
        "task_id": record.task_id,
        "name": record.name,
        "state": state,
        "progress": 100 if state in FINISHED_STATES else record.progress,
        "result": payload,
        "error": error,
        "user": record.user.get_username() if record.user_id else None,
        "created_at": record.created_at,
        "finished_at": record.result_done if state in FINISHED_STATES else None,
    }


def task_status_get_for_user(*, task_id: str, user) -> dict:
    record = tasks_with_state(TaskRecord.objects.select_related("user")).filter(task_id=task_id)
    record = record.first()
    if record is None or not (user.is_staff or record.user_id == user.id):
        raise NotFound("No task with this id.")
    return task_state_get(record=record)


def _json_or_text(raw):
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def _readable_error(raw) -> str:
    """`Type: message` from a stored exception; just the message for TaskFailed, whose
    message is the readable reason."""
    data = _json_or_text(raw)
    if not isinstance(data, dict):
        return str(data)
    message = data.get("exc_message", "")
    if isinstance(message, list | tuple):
        message = " ".join(str(part) for part in message)
    if data.get("exc_type") == "TaskFailed":
        return str(message)
    return f"{data.get('exc_type', 'Error')}: {message}".strip()


# --- notifications ----------------------------------------------------------------------------

Kind = Notification.Kind

# Which kinds go out by e-mail unless the user says otherwise.
NOTIFICATION_EMAIL_DEFAULTS: dict[str, bool] = {
    Kind.GENERAL.value: True,
    Kind.DOCUMENT_READY.value: True,
    Kind.DOCUMENT_FAILED.value: True,
    Kind.REPLY_FINISHED.value: False,
    Kind.QUOTA_WARNING.value: True,
    Kind.QUOTA_EXHAUSTED.value: True,
    Kind.STAFF_ALERT.value: True,
}


def notification_list_for_user(*, user, unread: bool = False) -> QuerySet[Notification]:
    notifications = Notification.objects.filter(user=user).order_by("-created_at", "-id")
    return notifications.filter(read_at__isnull=True) if unread else notifications


def notification_get_for_user(*, user, notification_id: int) -> Notification:
    notification = Notification.objects.filter(id=notification_id, user=user).first()
    if notification is None:
        raise NotFound(_("No notification with this id."))
    return notification


def notification_unread_count(*, user) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).count()


def notification_preferences_get(*, user) -> dict[str, bool]:
    """{kind: wanted by e-mail} for every kind the user can receive."""
    stored = (
        NotificationPreference.objects.filter(user=user).values_list("email", flat=True).first()
        or {}
    )
    kinds = {k: stored.get(k, default) for k, default in NOTIFICATION_EMAIL_DEFAULTS.items()}
    if not user.is_staff:
        kinds.pop(Kind.STAFF_ALERT.value)
    return kinds


def notification_email_wanted(*, user, kind: str) -> bool:
    stored = (
        NotificationPreference.objects.filter(user=user).values_list("email", flat=True).first()
        or {}
    )
    return bool(stored.get(kind, NOTIFICATION_EMAIL_DEFAULTS.get(kind, True)))
