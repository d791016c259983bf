from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from .alerts import alerts_reset_dedup
from .models import AccessListEntry, Alert, ExtraRule, LayerPolicy, Plan, TokenUsage

ENDPOINT_GROUP_FIELDS = (
    "conversations_per_minute", "messages_per_minute", "polling_per_minute",
    "knowledge_per_minute",
)  # fmt: skip


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "name", "tier", "requests_per_minute", "conversations_per_minute",
        "messages_per_minute", "polling_per_minute", "knowledge_per_minute",
        "monthly_token_quota", "is_default",
    )  # fmt: skip
    list_editable = (
        "requests_per_minute", "conversations_per_minute", "messages_per_minute",
        "polling_per_minute", "knowledge_per_minute", "monthly_token_quota",
    )  # fmt: skip
    fieldsets = (
        (None, {"fields": ("tier", "name", "is_default")}),
        (_("Requests per minute"), {"fields": ("requests_per_minute",)}),
        (
            _("Endpoint groups (per minute, this plan's override of the defaults)"),
            {"fields": ENDPOINT_GROUP_FIELDS},
        ),
        (_("LLM tokens"), {"fields": ("monthly_token_quota",)}),
        (
            _("Knowledge-base storage (per user)"),
            {"fields": ("storage_quota_bytes", "document_quota", "knowledge_base_quota")},
        ),
        (_("Cache"), {"fields": ("ai_response_cache_enabled",)}),
        (_("Assistants"), {"fields": ("can_create_assistants",)}),
    )


@admin.register(LayerPolicy)
class LayerPolicyAdmin(admin.ModelAdmin):
    list_display = ("layer", "limit", "algorithm", "shadow", "fail_mode", "enabled", "updated_at")
    list_editable = ("limit", "algorithm", "shadow", "fail_mode", "enabled")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request) -> bool:
        # One row per built-in layer, created by a migration.
        present = LayerPolicy.objects.filter(layer__in=LayerPolicy.Layer.values).count()
        return present < len(LayerPolicy.Layer.values)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ExtraRule)
class ExtraRuleAdmin(admin.ModelAdmin):
    list_display = (
        "name", "path_prefix", "plan", "key", "limit", "period_seconds", "algorithm",
        "shadow", "fail_mode", "enabled",
    )  # fmt: skip
    list_editable = ("limit", "shadow", "enabled")
    list_filter = ("enabled", "shadow", "plan")


@admin.register(AccessListEntry)
class AccessListEntryAdmin(admin.ModelAdmin):
    list_display = ("kind", "user", "network", "note", "expires_at", "created_at")
    list_filter = ("kind",)
    search_fields = ("user__username", "network", "note")
    raw_id_fields = ("user",)


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("kind", "message", "count", "first_seen", "last_seen", "acknowledged")
    list_filter = ("kind", "acknowledged")
    readonly_fields = ("kind", "message", "details", "count", "first_seen", "last_seen")
    actions = ["acknowledge"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description=_("Acknowledge selected alerts"))
    def acknowledge(self, request, queryset):
        updated = queryset.update(acknowledged=True)
        alerts_reset_dedup()
        self.message_user(request, _("%(count)d alerts acknowledged.") % {"count": updated},
                          messages.SUCCESS)  # fmt: skip


@admin.register(TokenUsage)
class TokenUsageAdmin(admin.ModelAdmin):
    # reserved_tokens: held by replies in progress; editable to release one a deleted row left.
    list_display = ("user", "month", "prompt_tokens", "completion_tokens", "reserved_tokens")
    list_filter = ("month",)
    search_fields = ("user__username",)
