"""`Authorization: Bearer <api key>` for the DRF API."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from rest_framework import authentication, exceptions

from .keys import KEY_PREFIX, api_key_hash
from .models import ApiKey

# last_used_at is informative; writing it on every request would turn reads into writes.
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def api_key_resolve(raw_key: str) -> ApiKey | None:
    """The active key for a raw value, or None. One indexed lookup by hash."""
    if not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        return None
    key = (
        ApiKey.objects.select_related("user", "user__plan")
        .filter(key_hash=api_key_hash(raw_key))
        .first()
    )
    if key is None or not key.is_active or not key.user.is_active:
        return None
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            raw_key = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Malformed API key.") from None
        key = api_key_resolve(raw_key)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > _LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return key.user, key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing or wrong.
        return self.keyword
