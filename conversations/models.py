"""Conversations and their messages. The database is the source of truth for a reply: the
worker checkpoints partial content (with the sequence number it reached) while streaming, so
any reader can resume from it; the Redis reply log only adds the last few deltas."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    # Empty until the user names it or the first exchange generates one.
    title = models.CharField(max_length=200, blank=True)
    knowledge_bases = models.ManyToManyField(
        "knowledge.KnowledgeBase", blank=True, related_name="conversations"
    )
    # Chosen when the conversation starts and kept; empty: the default assistant (the CHAT_*
    # settings). A deleted assistant's conversations go on with the default one.
    assistant = models.ForeignKey(
        "assistants.Assistant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="conversations",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Bumped by every new message, so "newest first" lists recently active conversations first.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", _("User")
        ASSISTANT = "assistant", _("Assistant")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        STREAMING = "streaming", _("Streaming")
        COMPLETED = "completed", _("Completed")
        FAILED = "failed", _("Failed")
        STOPPED = "stopped", _("Stopped")

    FINISHED = (Status.COMPLETED, Status.FAILED, Status.STOPPED)

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    # For an assistant message: the question it answers (several after "regenerate").
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies"
    )
    content = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETED)
    # The last delta sequence number whose text `content` includes (a streaming checkpoint).
    last_seq = models.PositiveIntegerField(default=0)
    # User messages: the bases to retrieve from, fixed when sent (regenerate reuses them).
    knowledge_base_ids = models.JSONField(default=list, blank=True)
    client_id = models.CharField(max_length=64, blank=True)
    citations = models.JSONField(default=list, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    # A reply's share of its owner's monthly token quota, held from queueing until the status
    # change that ends it settles it (throttling.quota) and sets this back to 0.
    reserved_tokens = models.PositiveIntegerField(default=0)
    reserved_month = models.DateField(null=True, blank=True)
    provider = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=100, blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    feedback_rating = models.SmallIntegerField(null=True, blank=True)
    feedback_comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "id"]),
            models.Index(fields=["status", "updated_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(feedback_rating__isnull=True)
                | models.Q(feedback_rating__in=[1, -1]),
                name="feedback_rating_is_plus_or_minus_one",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role} {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def timings(self) -> dict[str, int | None]:
        """Milliseconds: queued (created → worker start), to first token, total."""

        def ms(start, end) -> int | None:
            return round((end - start).total_seconds() * 1000) if start and end else None

        return {
            "queue_ms": ms(self.created_at, self.started_at),
            "first_token_ms": ms(self.created_at, self.first_token_at),
            "total_ms": ms(self.created_at, self.finished_at),
        }
