import ipaddress

from django.conf import settings
from django.core.exceptions import ValidationError
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
    # Endpoint groups (throttling.rules); defaults are the free tier's (throttling.plans).
    conversations_per_minute = models.PositiveIntegerField(default=60)
    messages_per_minute = models.PositiveIntegerField(
        default=120, help_text=_("Sending: POST and other writes under /api/v1/messages.")
    )
    knowledge_per_minute = models.PositiveIntegerField(default=30)
    polling_per_minute = models.PositiveIntegerField(
        default=60,
        help_text=_("Reads of messages and tasks (a reply's status or stream, a task's state, "
                    "a conversation's history), kept apart from the budget sending needs."),
    )  # fmt: skip
    monthly_token_quota = models.PositiveBigIntegerField(
        help_text=_("LLM tokens per calendar month (UTC); 0 means unlimited.")
    )
    # Knowledge-base storage per user (owner of the bases); defaults are the free tier's.
    storage_quota_bytes = models.PositiveBigIntegerField(
        default=200 * 1024 * 1024,
        help_text=_("Bytes of uploaded documents a user may keep; 0 means unlimited."),
    )
    document_quota = models.PositiveIntegerField(
        default=100, help_text=_("Documents a user may keep; 0 means unlimited.")
    )
    knowledge_base_quota = models.PositiveIntegerField(
        default=5, help_text=_("Knowledge bases a user may own; 0 means unlimited.")
    )
    is_default = models.BooleanField(
        default=False, help_text=_("Assigned to users who have no plan of their own.")
    )
    ai_response_cache_enabled = models.BooleanField(
        default=True,
        help_text=_("Answer a repeated identical question from the cache (24 h) instead of "
                    "calling the model again."),
    )  # fmt: skip
    # Off for free, on for pro and enterprise (throttling.plans.ASSISTANT_CREATION); staff
    # create assistants whatever their plan.
    can_create_assistants = models.BooleanField(
        default=False,
        help_text=_("Users on this plan may create and edit their own assistants."),
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
            "polling": self.polling_per_minute,
        }


class TokenUsage(models.Model):
    """LLM tokens a user consumed in one calendar month; monthly quotas read this."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="token_usage"
    )
    month = models.DateField(help_text=_("First day of the month (UTC)."))
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    # Held for replies in flight (throttling.quota): reserved when a reply is queued, released
    # when it ends. Every reservation keeps used + reserved within the quota.
    reserved_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "month"], name="one_usage_row_per_month")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.month:%Y-%m}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Algorithm(models.TextChoices):
    """Guarantees (most admitted in any window-long span) are in docs/throttling.md."""

    TOKEN_BUCKET = "token_bucket", _("Token bucket")
    SLIDING_WINDOW = "sliding_window", _("Sliding window (exact log)")
    FIXED_WINDOW = "fixed_window", _("Fixed window")


class FailMode(models.TextChoices):
    OPEN = "open", _("Fail open (per-process fallback bucket)")
    CLOSED = "closed", _("Fail closed (refuse with 503)")


class RuleBehaviour(models.Model):
    """How a limit is enforced: shared by the built-in layers and staff-defined rules."""

    algorithm = models.CharField(
        max_length=20, choices=Algorithm.choices, default=Algorithm.TOKEN_BUCKET
    )
    shadow = models.BooleanField(
        default=False, help_text=_("Count what would be refused, but refuse nothing.")
    )
    fail_mode = models.CharField(max_length=10, choices=FailMode.choices, default=FailMode.OPEN)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class LayerPolicy(RuleBehaviour):
    """How one built-in layer is enforced. Plan and endpoint-group limits come from the plan;
    the global and IP limits are set here (empty = the THROTTLE_*_LIMIT setting)."""

    class Layer(models.TextChoices):
        GLOBAL = "global", _("Global (everyone together)")
        IP = "ip", _("Client IP (requests without a valid identity)")
        PLAN = "plan", _("Plan tier (per user)")
        ENDPOINT = "endpoint", _("Endpoint group (per user, or IP when anonymous)")

    layer = models.CharField(max_length=20, choices=Layer.choices, unique=True)
    limit = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("Requests per minute; global and IP layers only.")
    )

    class Meta:
        ordering = ["layer"]
        verbose_name = _("layer policy")
        verbose_name_plural = _("layer policies")

    def __str__(self) -> str:
        return self.get_layer_display()


class ExtraRule(RuleBehaviour):
    """A staff-defined limit on top of the built-in layers, e.g. 5/min on knowledge search
    for the free plan. It is checked in the same atomic round trip as the layers."""

    class Key(models.TextChoices):
        CLIENT = "client", _("Per user (or IP when anonymous)")
        IP = "ip", _("Per client IP")
        GLOBAL = "global", _("Everyone together")

    name = models.SlugField(max_length=50, unique=True)
    path_prefix = models.CharField(
        max_length=200,
        blank=True,
        help_text=_("Applies to API paths starting with this, e.g. /api/v1/knowledge/search. "
                    "Empty: every API path."),
    )  # fmt: skip
    plan = models.ForeignKey(
        Plan,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="extra_rules",
        help_text=_("Only for users on this plan; empty: everyone."),
    )
    key = models.CharField(max_length=10, choices=Key.choices, default=Key.CLIENT)
    limit = models.PositiveIntegerField()
    period_seconds = models.PositiveIntegerField(default=60)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        if self.limit < 1 or self.period_seconds < 1:
            raise ValidationError(_("Limit and period must be at least 1."))


class AccessListEntry(models.Model):
    """Allow-listed users/IPs skip every layer but global; deny-listed ones get 403 `blocked`.
    An entry names a user or an IP address / CIDR range (IPv4 or IPv6)."""

    class Kind(models.TextChoices):
        ALLOW = "allow", _("Allow")
        DENY = "deny", _("Deny")

    kind = models.CharField(max_length=5, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="access_list_entries",
    )
    network = models.CharField(
        max_length=64, blank=True, help_text=_("An IP address or CIDR range, e.g. 10.0.0.0/8.")
    )
    note = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "-created_at"]
        verbose_name = _("allow/deny list entry")
        verbose_name_plural = _("allow/deny list")
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(user__isnull=False) & models.Q(network=""))
                | (models.Q(user__isnull=True) & ~models.Q(network="")),
                name="access_entry_user_xor_network",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.user or self.network}"

    def clean(self):
        if bool(self.user_id) == bool(self.network):
            raise ValidationError(_("Name either a user or an IP address/CIDR range."))
        if self.network:
            try:
                self.network = str(ipaddress.ip_network(self.network.strip(), strict=False))
            except ValueError:
                raise ValidationError({"network": _("Not an IP address or CIDR range.")}) from None


class Alert(models.Model):
    """A limiter condition staff should know about; repeated occurrences within the
    de-duplication window bump `count` and `last_seen` on one row instead of adding rows."""

    class Kind(models.TextChoices):
        DENY_SPIKE = "deny_spike", _("Deny-rate spike")
        GLOBAL_NEAR_LIMIT = "global_near_limit", _("Global layer near its limit")
        FAIL_OPEN = "fail_open", _("Limiter failed open (Redis unavailable)")
        FAIL_CLOSED = "fail_closed", _("Limiter failed closed (Redis unavailable)")

    kind = models.CharField(max_length=30, choices=Kind.choices)
    message = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)
    count = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()
    acknowledged = models.BooleanField(default=False)

    class Meta:
        ordering = ["-last_seen"]
        indexes = [models.Index(fields=["kind", "-last_seen"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} x{self.count}"
