from django.contrib import admin

from .models import Plan, TokenUsage


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "name", "tier", "requests_per_minute", "conversations_per_minute",
        "messages_per_minute", "knowledge_per_minute", "monthly_token_quota", "is_default",
    )  # fmt: skip
    list_editable = ("requests_per_minute", "monthly_token_quota")


@admin.register(TokenUsage)
class TokenUsageAdmin(admin.ModelAdmin):
    list_display = ("user", "month", "prompt_tokens", "completion_tokens")
    list_filter = ("month",)
    search_fields = ("user__username",)
