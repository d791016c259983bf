from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.utils.formats import date_format
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .models import ApiKey, EmailVerification, User
from .services import api_key_create


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "plan", "is_staff", "is_active", "date_joined")
    list_filter = ("plan", "is_staff", "is_active")
    list_select_related = ("plan",)
    fieldsets = (
        *BaseUserAdmin.fieldsets,
        ("Plan", {"fields": ("plan",)}),
        (_("E-mail verification"), {"fields": ("email_verification_status",)}),
    )
    # Shown, never edited (nor posted: saving a user needs nothing new): a pending signup is
    # activated by its link or by ticking "active". To get rid of an unverified signup, delete
    # the user; deactivating it is undone if its link is followed while still pending.
    readonly_fields = ("email_verification_status",)

    @admin.display(description=_("E-mail verification"))
    def email_verification_status(self, obj) -> str:
        verification = EmailVerification.objects.filter(user=obj).first()
        if verification is None:
            return gettext("Not required at signup")
        if verification.verified_at is None:
            return gettext("Pending: link mailed to %(email)s on %(date)s") % {
                "email": verification.email,
                "date": date_format(verification.created_at, "SHORT_DATETIME_FORMAT"),
            }
        return gettext("Verified %(email)s on %(date)s") % {
            "email": verification.email,
            "date": date_format(verification.verified_at, "SHORT_DATETIME_FORMAT"),
        }


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
