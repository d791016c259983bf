from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    plan = models.ForeignKey(
        "throttling.Plan",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="users",
        help_text=_("Empty means the default plan (free)."),
    )


class ApiKey(models.Model):
    """An API key; only its SHA-256 is stored (keys are 256-bit random, so a fast hash is
    safe and keeps authentication to one indexed lookup)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text=_("Shown to identify the key."))
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return api_key_active(self.revoked_at, self.expires_at)


def api_key_active(revoked_at, expires_at) -> bool:
    """Whether a key with these values may be used now (also read off cached rows)."""
    if revoked_at is not None:
        return False
    return expires_at is None or expires_at > timezone.now()


class EmailVerification(models.Model):
    """A signup made with ACCOUNT_EMAIL_VERIFICATION on: its user stays inactive until the
    link mailed to `email` is followed (`verified_at`). Only users with a pending row are ever
    activated by a link, so an account staff deactivate is never reactivated by one. (A table
    of its own rather than a user field: cached API-key rows hold the user's fields in order,
    accounts/authentication.py, and must keep reading across a deploy.)"""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="email_verification"
    )
    email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.email
