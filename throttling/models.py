from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Plan(models.Model):
    """A plan tier and its limits; staff edit these in the admin."""

    class Tier(models.TextChoices):
        FREE = "free", _("Free")
        PRO = "pro", _("Pro")
        ENTERPRISE = "enterprise", _("Enterprise")

    tier = models.CharField(max_length=20, choices=Tier.choices, unique=True)
    name = models.CharField(max_length=100)
    requests_per_minute = models.PositiveIntegerField()
    conversations_per_minute = models.PositiveIntegerField(default=60)
    messages_per_minute = models.PositiveIntegerField(default=120)
    knowledge_per_minute = models.PositiveIntegerField(default=30)
    monthly_token_quota = models.PositiveBigIntegerField(
        help_text=_("LLM tokens per calendar month (UTC); 0 means unlimited.")
    )
    is_default = models.BooleanField(
        default=False, help_text=_("Assigned to users who have no plan of their own.")
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["requests_per_minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_plan"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def endpoint_limits(self) -> dict[str, int]:
        return {
            "conversations": self.conversations_per_minute,
            "messages": self.messages_per_minute,
            "knowledge": self.knowledge_per_minute,
        }


class TokenUsage(models.Model):
    """LLM tokens a user consumed in one calendar month; monthly quotas read this."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="token_usage"
    )
    month = models.DateField(help_text=_("First day of the month (UTC)."))
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "month"], name="one_usage_row_per_month")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.month:%Y-%m}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
