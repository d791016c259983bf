"""Writes for accounts: users and API keys."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from openspark.core.errors import NotFound
from throttling.models import Plan

from .keys import KEY_PREFIX, api_key_generate, api_key_hash
from .models import ApiKey


@transaction.atomic
def user_create(*, username: str, password: str, email: str = "", plan: Plan | None = None,
                is_staff: bool = False):  # fmt: skip
    User = get_user_model()
    user = User(username=username, email=email, plan=plan, is_staff=is_staff, is_superuser=is_staff)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    return user


def api_key_create(*, user, name: str, expires_at: dt.datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value: the only time the raw value exists."""
    raw_key = api_key_generate()
    key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=raw_key[: len(KEY_PREFIX) + 6],
        key_hash=api_key_hash(raw_key),
        expires_at=expires_at,
    )
    return key, raw_key


def api_key_revoke(*, user, key_id: int) -> None:
    key = ApiKey.objects.filter(id=key_id, user=user).first()
    if key is None:
        raise NotFound("No API key with this id.")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        # save(), not update(): its signal drops the key's cached authentication at once.
        key.save(update_fields=["revoked_at"])
