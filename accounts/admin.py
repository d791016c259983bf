from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import ApiKey, EmailVerification, User
from .services import api_key_create


class EmailVerificationInline(admin.TabularInline):
    """Shown, never edited: a pending signup is activated by its link (or by staff ticking
    "active"); to get rid of an unverified signup, delete the user, as a link would
    reactivate it while its verification is pending."""

    model = EmailVerification
    fields = readonly_fields = ("email", "created_at", "verified_at")
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "plan", "is_staff", "is_active", "date_joined")
    list_filter = ("plan", "is_staff", "is_active")
    list_select_related = ("plan",)
    fieldsets = (*BaseUserAdmin.fieldsets, ("Plan", {"fields": ("plan",)}))
    inlines = [EmailVerificationInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "user",
        "prefix",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "name", "expires_at")
        return ("user", "name", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at")

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        # Keys are minted by the service so the raw value is shown once and never stored.
        key, raw_key = api_key_create(user=obj.user, name=obj.name, expires_at=obj.expires_at)
        obj.pk = key.pk
        self.message_user(
            request, f"API key created: {raw_key} — copy it now, it is not shown again."
        )
