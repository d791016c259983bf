"""Invalidate cached API-key authentication (accounts/authentication.py) on any write to a
key or to its user, from a service, the admin or anywhere else. Connected in ready()."""

from __future__ import annotations

from django.conf import settings
from django.db.models.signals import post_delete, post_save

from openspark.core.cache import api_key_scope, cache_bump, user_scope


def _key_changed(sender, instance, update_fields=None, **kwargs) -> None:
    # Recording a use (authentication.api_key_touch) stores the row again itself: a bump
    # would send the key's next request down the slow path once a minute.
    if update_fields is not None and set(update_fields) == {"last_used_at"}:
        return
    cache_bump(scope=api_key_scope(instance.key_hash))


def _user_changed(sender, instance, update_fields=None, **kwargs) -> None:
    # Logging in saves last_login, which authenticating does not depend on.
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    from .models import ApiKey

    hashes = ApiKey.objects.filter(user_id=instance.pk).values_list("key_hash", flat=True)
    cache_bump(scopes=[api_key_scope(digest) for digest in hashes])


def _user_profile_changed(sender, instance, update_fields=None, **kwargs) -> None:
    """Everything cached about the user (profile, conversation list…), on any save or delete
    but a login's (last_login, which no cached read shows)."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    cache_bump(scope=user_scope(instance.pk))


def connect() -> None:
    post_save.connect(
        _user_profile_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="cache-user"
    )
    post_delete.connect(
        _user_profile_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="cache-user-del"
    )
    post_save.connect(_key_changed, sender="accounts.ApiKey", dispatch_uid="apikey-save")
    post_delete.connect(_key_changed, sender="accounts.ApiKey", dispatch_uid="apikey-delete")
    post_save.connect(_user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="apikey-user")
