"""Writes for cross-cutting records: task bookkeeping (records, progress, re-queueing,
expiry, dead letters) and notifications (stored, pushed live, e-mailed once)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from celery import Task, current_task, signature
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_celery_results.models import TaskResult

from .errors import ApplicationError, Conflict
from .live import user_event_publish
from .models import DeadLetter, Notification, NotificationPreference, TaskRecord
from .selectors import (
    NOTIFICATION_EMAIL_DEFAULTS,
    notification_email_wanted,
    notification_get_for_user,
    notification_unread_count,
    task_state_get,
)
from .serializers import NotificationSerializer

logger = logging.getLogger(__name__)

# --- tasks ------------------------------------------------------------------------------------


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
    """Record the task for its owner (with its arguments, so it can be queued again) and
    queue it once the surrounding transaction commits, so the worker never reads rows that
    are not there yet. Returns the task id at once. `task` may be a signature carrying
    routing options (`task.signature(queue=…)`). `task_id`: one from task_id_new() already
    stored on the caller's row (saves an UPDATE).

    A broker that refuses the message is logged, not raised (the caller's writes are
    committed): the record then reads `LOST` after TASK_LOST_AFTER_SECONDS, and staff can
    queue it again from the admin."""
    task_id = task_id or task_id_new()
    args, kwargs = list(args), dict(kwargs or {})
    options = {k: v for k, v in dict(getattr(task, "options", None) or {}).items() if k == "queue"}
    TaskRecord.objects.create(
        task_id=task_id, name=task.name, user=user, args=args, kwargs=kwargs, options=options
    )
    transaction.on_commit(
        lambda: task.apply_async(args=args, kwargs=kwargs, task_id=task_id), robust=True
    )
    return task_id


def task_record_ensure(*, task_id: str, name: str, args, kwargs, options: dict) -> None:
    """A record for a task queued without task_enqueue (beat, Celery's own); no owner."""
    TaskRecord.objects.get_or_create(
        task_id=task_id,
        defaults={
            "name": name,
            "args": list(args or []),
            "kwargs": dict(kwargs or {}),
            "options": options,
        },
    )


def task_progress_set(*, task_id: str | None, progress: int) -> None:
    if task_id:
        TaskRecord.objects.filter(task_id=task_id).update(progress=max(0, min(100, progress)))


def task_progress_step(*, done: int, total: int) -> None:
    """Report progress of the running task from inside its work (`done` of `total` items),
    about every 5 %: code called outside a task (a management command) reports nothing."""
    request = getattr(current_task, "request", None)
    task_id = getattr(request, "id", None)
    if not task_id or getattr(request, "is_eager", False) or total <= 0:
        return
    if done >= total or done % max(1, total // 20) == 0:
        task_progress_set(task_id=task_id, progress=int(100 * min(done, total) / total))


RETRYABLE_STATES = {"FAILURE", "LOST", "REVOKED"}


def task_requeue(
    *, task_id: str, name: str, args: list, kwargs: dict, options: dict, user=None
) -> str:
    """Queue a task again under the same id, by name, with its recorded arguments: the
    caller's rows that name the task (a document's or a reply's task_id) keep pointing at
    it, and `GET tasks/{id}/` follows the new run from PENDING (its old result is deleted)."""
    TaskResult.objects.filter(task_id=task_id).delete()
    TaskRecord.objects.update_or_create(
        task_id=task_id,
        defaults={
            "name": name,
            "user": user,
            "args": args,
            "kwargs": kwargs,
            "options": options,
            "progress": 0,
        },
    )
    queued = signature(name, args=args, kwargs=kwargs, options=options)
    transaction.on_commit(lambda: queued.apply_async(task_id=task_id), robust=True)
    return task_id


def task_record_retry(*, record: TaskRecord) -> str:
    """Staff: queue a failed or lost task again with the same arguments."""
    state = task_state_get(record=record)["state"]
    if state not in RETRYABLE_STATES:
        raise Conflict(f"Only failed or lost tasks can be retried; this one is {state}.")
    with transaction.atomic():
        DeadLetter.objects.filter(task_id=record.task_id, status=DeadLetter.Status.OPEN).update(
            status=DeadLetter.Status.RETRIED, resolved_at=timezone.now()
        )
        return task_requeue(
            task_id=record.task_id,
            name=record.name,
            args=record.args,
            kwargs=record.kwargs,
            options=record.options,
            user=record.user,
        )


def tasks_expire(*, now=None) -> dict[str, int]:
    """Beat (`tasks_expire`): delete task records and their Celery results together once
    untouched for TASK_RETENTION_DAYS, Celery results without a record past the same age,
    and dead letters resolved before it. Open dead letters stay until staff act."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.TASK_RETENTION_DAYS)
    records = results = 0
    while ids := list(
        TaskRecord.objects.filter(updated_at__lt=cutoff).values_list("task_id", flat=True)[:500]
    ):
        with transaction.atomic():
            results += TaskResult.objects.filter(task_id__in=ids).delete()[0]
            records += TaskRecord.objects.filter(task_id__in=ids).delete()[0]
    results += (
        TaskResult.objects.filter(date_done__lt=cutoff)
        .exclude(task_id__in=TaskRecord.objects.values("task_id"))
        .delete()[0]
    )
    dead = DeadLetter.objects.exclude(status=DeadLetter.Status.OPEN).filter(resolved_at__lt=cutoff)
    return {"records": records, "results": results, "dead_letters": dead.delete()[0]}


# --- dead letters -----------------------------------------------------------------------------

TRACEBACK_EXCERPT_CHARS = 4000


def dead_letter_record(
    *,
    task_id: str,
    name: str,
    args,
    kwargs,
    options: dict,
    error: str,
    traceback: str,
    attempts: int,
) -> DeadLetter:
    """Called by ProductTask.on_failure when a task fails for good. One row per task id: a
    task that fails again after a staff retry reopens its row (first failure kept)."""
    now = timezone.now()
    owner_id = TaskRecord.objects.filter(task_id=task_id).values_list("user_id", flat=True).first()
    fields = {
        "name": name,
        "user_id": owner_id,
        "args": list(args or []),
        "kwargs": dict(kwargs or {}),
        "options": options,
        "error": error[:2000],
        "traceback": traceback[-TRACEBACK_EXCERPT_CHARS:],
        "attempts": attempts,
        "last_failed_at": now,
        "status": DeadLetter.Status.OPEN,
        "resolved_at": None,
    }
    logger.error(
        "Task %s %s failed for good after %d attempt(s): %s", name, task_id, attempts, error
    )
    with transaction.atomic():
        if DeadLetter.objects.filter(task_id=task_id).update(**fields, failures=F("failures") + 1):
            return DeadLetter.objects.get(task_id=task_id)
        try:
            with transaction.atomic():
                return DeadLetter.objects.create(task_id=task_id, first_failed_at=now, **fields)
        except IntegrityError:  # another process recorded it meanwhile
            DeadLetter.objects.filter(task_id=task_id).update(**fields)
            return DeadLetter.objects.get(task_id=task_id)


def dead_letter_retry(*, dead_letter: DeadLetter) -> str:
    """Staff: queue the task again (same id, arguments and queue); its row reads `retried`
    and opens again if it fails again."""
    with transaction.atomic():
        DeadLetter.objects.filter(id=dead_letter.id).update(
            status=DeadLetter.Status.RETRIED, resolved_at=timezone.now()
        )
        return task_requeue(
            task_id=dead_letter.task_id,
            name=dead_letter.name,
            args=dead_letter.args,
            kwargs=dead_letter.kwargs,
            options=dead_letter.options,
            user=dead_letter.user,
        )


def dead_letter_discard(*, dead_letter: DeadLetter) -> None:
    DeadLetter.objects.filter(id=dead_letter.id).update(
        status=DeadLetter.Status.DISCARDED, resolved_at=timezone.now()
    )


# --- notifications ----------------------------------------------------------------------------


def notification_send(
    *,
    user,
    kind: str = Notification.Kind.GENERAL,
    title: str,
    body: str = "",
    level: str = Notification.Level.INFO,
    url: str = "",
    dedup_key: str = "",
) -> Notification | None:
    """Store a notification; after commit push it to the user's open pages and, when they have
    an address and want this kind by e-mail, queue its e-mail. With `dedup_key`, a user gets
    at most one notification per key: None when they already have it."""
    if dedup_key and Notification.objects.filter(user=user, dedup_key=dedup_key).exists():
        return None
    wants_email = bool(user.email) and notification_email_wanted(user=user, kind=kind)
    fields = {
        "user": user,
        "kind": kind,
        "level": level,
        "title": str(title)[:200],
        "body": str(body),
        "url": url[:500],
        "dedup_key": dedup_key[:200],
        "email_status": (
            Notification.EmailStatus.PENDING if wants_email else Notification.EmailStatus.SKIPPED
        ),
    }
    try:
        with transaction.atomic():
            notification = Notification.objects.create(**fields)
    except IntegrityError:
        if not dedup_key:
            raise
        return None
    transaction.on_commit(lambda: _notification_push(notification), robust=True)
    if wants_email:
        from .tasks import send_notification

        task_enqueue(task=send_notification, args=[notification.id], user=user)
    return notification


def notification_send_staff(
    *, kind: str, title: str, body: str = "", level: str = "warning", url: str = "",
    dedup_key: str = "",
) -> int:  # fmt: skip
    """The same notification to every active staff user; returns how many were new."""
    sent = 0
    for user in get_user_model().objects.filter(is_staff=True, is_active=True):
        notification = notification_send(
            user=user, kind=kind, title=title, body=body, level=level, url=url, dedup_key=dedup_key
        )
        sent += notification is not None
    return sent


def _notification_push(notification: Notification) -> None:
    user_event_publish(
        user_id=notification.user_id,
        event={
            "type": "notification.created",
            "notification": NotificationSerializer(notification).data,
            "unread_count": notification_unread_count(user=notification.user),
        },
    )


def _unread_push(user) -> None:
    user_event_publish(
        user_id=user.pk,
        event={"type": "notification.read", "unread_count": notification_unread_count(user=user)},
    )


# A claimed e-mail whose task vanished (worker killed mid-send) may be claimed again after
# this long; above EMAIL_TIMEOUT, so a send in progress is never doubled by a redelivery.
EMAIL_CLAIM_SECONDS = 600


def notification_deliver(*, notification_id: int) -> bool:
    """E-mail a notification at most once: the row is claimed by a conditional UPDATE first,
    so a retried, redelivered or duplicated task finds it claimed or sent and does nothing.
    A failed send gives the claim back and raises, for the task to retry."""
    now = timezone.now()
    claimable = Q(email_status=Notification.EmailStatus.PENDING) | Q(
        email_status=Notification.EmailStatus.SENDING,
        email_claimed_at__lt=now - timedelta(seconds=EMAIL_CLAIM_SECONDS),
    )
    rows = Notification.objects.filter(claimable, id=notification_id)
    if not rows.update(email_status=Notification.EmailStatus.SENDING, email_claimed_at=now):
        return False
    claim = Notification.objects.filter(
        id=notification_id, email_status=Notification.EmailStatus.SENDING, email_claimed_at=now
    )
    notification = Notification.objects.select_related("user").get(id=notification_id)
    user = notification.user
    if not user.email or not notification_email_wanted(user=user, kind=notification.kind):
        claim.update(email_status=Notification.EmailStatus.SKIPPED, email_claimed_at=None)
        return False
    body = notification.body or notification.title
    if notification.url and settings.SITE_URL:
        body = f"{body}\n\n{settings.SITE_URL.rstrip('/')}{notification.url}"
    try:
        send_mail(
            subject=f"[OpenSpark] {notification.title}",
            message=body,
            from_email=None,
            recipient_list=[user.email],
        )
    except Exception:
        claim.update(email_status=Notification.EmailStatus.PENDING, email_claimed_at=None)
        raise
    claim.update(email_status=Notification.EmailStatus.SENT, emailed_at=timezone.now())
    return True


def notification_mark_read(*, user, notification_id: int) -> Notification:
    notification = notification_get_for_user(user=user, notification_id=notification_id)
    if notification.read_at is None:
        Notification.objects.filter(id=notification.id, read_at__isnull=True).update(
            read_at=timezone.now()
        )
        notification.refresh_from_db(fields=["read_at"])
        transaction.on_commit(lambda: _unread_push(user), robust=True)
    return notification


def notifications_mark_all_read(*, user) -> int:
    marked = Notification.objects.filter(user=user, read_at__isnull=True).update(
        read_at=timezone.now()
    )
    if marked:
        transaction.on_commit(lambda: _unread_push(user), robust=True)
    return marked


def notification_preferences_update(*, user, email: dict[str, bool]) -> None:
    """Set which kinds the user wants by e-mail (kinds not named keep their setting)."""
    unknown = sorted(set(email) - set(NOTIFICATION_EMAIL_DEFAULTS))
    if unknown:
        raise ApplicationError(
            "Unknown notification kinds.", details={"email": [f"Unknown: {', '.join(unknown)}"]}
        )
    with transaction.atomic():
        preference, _created = NotificationPreference.objects.select_for_update().get_or_create(
            user=user
        )
        preference.email = {**preference.email, **{k: bool(v) for k, v in email.items()}}
        preference.save(update_fields=["email", "updated_at"])
