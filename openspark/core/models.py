from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class TaskRecord(models.Model):
    """Who asked for a Celery task, with what, and how far it got; Celery's own state and
    result live in django_celery_results.TaskResult under the same task_id. Both expire
    together (`tasks_expire`, TASK_RETENTION_DAYS)."""

    task_id = models.CharField(max_length=255, unique=True)
    name = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="task_records",
    )  # fmt: skip
    # What it was queued with, so staff can queue it again (JSON, as the broker carried it).
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True)  # routing: {"queue": …}
    progress = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["-created_at"], name="core_taskrecord_created"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.task_id}"


class DeadLetter(models.Model):
    """A task that failed for good (its retries exhausted, or an unexpected error): what it
    was, for whom, and why. Staff retry (queue it again under the same task id) or discard
    it in the admin. A work item that ended failed by design (`TaskFailed`) is not one."""

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        RETRIED = "retried", _("Retried")
        DISCARDED = "discarded", _("Discarded")

    task_id = models.CharField(max_length=255, unique=True)
    name = models.CharField(max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True)
    error = models.TextField()
    traceback = models.TextField(blank=True)  # the last lines only
    attempts = models.PositiveIntegerField(default=1)  # runs of the last failure, retries + 1
    failures = models.PositiveIntegerField(default=1)  # times it landed here
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_failed_at"]
        indexes = [models.Index(fields=["status", "-last_failed_at"])]

    def __str__(self) -> str:
        return f"{self.name} {self.task_id}"


class Notification(models.Model):
    """A message to a user, shown in the UI (pushed live to their open pages) and e-mailed
    by the `send_notification` task when the user has an address and wants that kind."""

    class Kind(models.TextChoices):
        GENERAL = "general", _("General")
        DOCUMENT_READY = "document_ready", _("A document is ready")
        DOCUMENT_FAILED = "document_failed", _("A document could not be processed")
        REPLY_FINISHED = "reply_finished", _("A reply finished while no page was open")
        QUOTA_WARNING = "quota_warning", _("Monthly token quota nearly used up (80%)")
        QUOTA_EXHAUSTED = "quota_exhausted", _("The monthly token quota is used up")
        STAFF_ALERT = "staff_alert", _("Rate limiter alerts (staff)")

    class Level(models.TextChoices):
        INFO = "info"
        SUCCESS = "success"
        WARNING = "warning"
        ERROR = "error"

    class EmailStatus(models.TextChoices):
        SKIPPED = "skipped"  # no address, or the user does not want this kind by e-mail
        PENDING = "pending"
        SENDING = "sending"  # claimed by a delivery task (email_claimed_at)
        SENT = "sent"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.GENERAL)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    url = models.CharField(max_length=500, blank=True)  # a path in the product
    # Set: at most one notification per user with this key (e.g. "quota:2026-11:80").
    dedup_key = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    email_status = models.CharField(
        max_length=10, choices=EmailStatus.choices, default=EmailStatus.SKIPPED
    )
    email_claimed_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "dedup_key"],
                condition=~Q(dedup_key=""),
                name="one_notification_per_dedup_key",
            )
        ]

    def __str__(self) -> str:
        return self.title


class NotificationPreference(models.Model):
    """Which kinds a user wants by e-mail; a kind missing from `email` takes its default
    (openspark.core.selectors.NOTIFICATION_EMAIL_DEFAULTS). In-app notifications are always on."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
        related_name="notification_preference",
    )  # fmt: skip
    email = models.JSONField(default=dict, blank=True)  # {kind: bool}
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user_id}"
