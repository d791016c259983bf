"""`Authorization: Bearer <api key>` for the DRF API.

Every API request authenticates, so the key's row and its user's are cached (namespace
`api_key`, scope `api_key:<hash>`): a hit is one Redis round trip instead of a three-table
query that Django spends ~1 ms compiling. Any write to the key or its user bumps the scope
(accounts/receivers.py), so a revoked key or a deactivated user is refused from the next
request on. Unknown keys are not cached (a flood of random keys must not fill Redis; the IP
layer limits them)."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import authentication, exceptions

from openspark.core.cache import API_KEY, api_key_scope, cache_value_set
from openspark.core.cache.service import (
    Prefetch,
    Seen,
    cache_value_prefetch,
    cache_value_prefetched,
    cache_value_read,
)

from .keys import KEY_PREFIX, api_key_hash
from .models import ApiKey, api_key_active

# last_used_at is informative; writing it on every request would turn reads into writes.
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def _fields(model, *, without: tuple[str, ...] = ()) -> tuple[str, ...]:
    # Model.from_db takes values in the order of the model's concrete fields.
    return tuple(f.attname for f in model._meta.concrete_fields if f.attname not in without)


_KEY_FIELDS = _fields(ApiKey)
# Not the password: the user is built with it deferred, so a save() cannot blank it.
_USER_FIELDS = _fields(get_user_model(), without=("password",))


def _api_key_load(digest: str) -> ApiKey | None:
    return ApiKey.objects.select_related("user", "user__plan").filter(key_hash=digest).first()


def _api_key_row(key: ApiKey) -> dict:
    return {
        "key": [getattr(key, name) for name in _KEY_FIELDS],
        "user": [getattr(key.user, name) for name in _USER_FIELDS],
    }


def _api_key_from_row(row: dict) -> ApiKey:
    key = ApiKey.from_db("default", _KEY_FIELDS, row["key"])
    key.user = get_user_model().from_db("default", _USER_FIELDS, row["user"])
    return key


def _well_formed(raw_key: str) -> bool:
    return raw_key.startswith(KEY_PREFIX) and len(raw_key) <= 200


def api_key_prefetch(raw_key: str) -> Prefetch | None:
    """The key's cached-row read, packed for the rate limiter to send with its check (one
    round trip for both); `api_key_resolve(raw_key, prefetch=…)` then uses the reply."""
    if not _well_formed(raw_key):
        return None
    digest = api_key_hash(raw_key)
    return cache_value_prefetch(API_KEY, key=digest, scopes=api_key_scope(digest))


def _api_key_active(raw_key: str, prefetch: Prefetch | None) -> tuple[ApiKey | None, Seen | None]:
    """The active key for a raw value (with its user) or None, and what its cached-row read
    saw (for `api_key_touch`)."""
    if not _well_formed(raw_key):
        return None, None
    digest = api_key_hash(raw_key)
    scope = api_key_scope(digest)
    answered, row, seen = cache_value_prefetched(prefetch)
    if not answered:
        row, seen = cache_value_read(API_KEY, key=digest, scopes=scope)
    if row is not None:
        key = _api_key_from_row(row)
    else:
        key = _api_key_load(digest)
        if key is None:
            return None, None
        # Under the versions the miss saw: a write that committed after the miss is never
        # hidden by this (older) row.
        cache_value_set(API_KEY, key=digest, value=_api_key_row(key), scopes=scope, seen=seen)
    if not key.is_active or not key.user.is_active:
        return None, seen
    return key, seen


def api_key_resolve(raw_key: str, *, prefetch: Prefetch | None = None) -> ApiKey | None:
    """The active key for a raw value (with its user), or None."""
    return _api_key_active(raw_key, prefetch)[0]


def api_key_last_use_due(last_used_at: dt.datetime | None) -> bool:
    return last_used_at is None or timezone.now() - last_used_at > _LAST_USED_RESOLUTION


def api_key_touch(key: ApiKey, seen: Seen | None) -> None:
    """Record a use (once a minute at most: see `api_key_last_use_due`). The save does not
    invalidate the cached row (accounts/receivers.py); the row is stored again with the new
    time under the versions `seen` read, so a write to the key or its user since then
    (which moved them) is never undone."""
    key.last_used_at = timezone.now()
    key.save(update_fields=["last_used_at"])
    if seen is not None:
        digest = key.key_hash
        cache_value_set(
            API_KEY, key=digest, value=_api_key_row(key), scopes=api_key_scope(digest), seen=seen
        )


_KEY_AT = {name: n for n, name in enumerate(_KEY_FIELDS)}
_USER_AT = {name: n for n, name in enumerate(_USER_FIELDS)}


class CachedKey(NamedTuple):
    user_id: int
    last_used_at: dt.datetime | None
    row: dict
    seen: Seen

    def touch(self) -> None:
        api_key_touch(_api_key_from_row(self.row), self.seen)


def api_key_prefetched(prefetch: Prefetch | None) -> CachedKey | None:
    """For the edge (openspark/edge.py), which answers without DRF: the active key whose
    cached row `prefetch` brought back (read off the row: no model is built); None sends the
    request on to DRF (a miss, or a key or user that is not active)."""
    answered, row, seen = cache_value_prefetched(prefetch)
    if not answered or row is None:
        return None
    key, user = row["key"], row["user"]
    if not user[_USER_AT["is_active"]] or not api_key_active(
        key[_KEY_AT["revoked_at"]], key[_KEY_AT["expires_at"]]
    ):
        return None
    return CachedKey(key[_KEY_AT["user_id"]], key[_KEY_AT["last_used_at"]], row, seen)


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
        # The limiter middleware may have read the key's row with its own check. (`request`
        # is DRF's, or Django's own when the SSE view authenticates outside DRF.)
        prefetched = getattr(getattr(request, "_request", request), "api_key_prefetch", None)
        prefetch = prefetched[1] if prefetched and prefetched[0] == raw_key else None
        key, seen = _api_key_active(raw_key, prefetch)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key.")
        if api_key_last_use_due(key.last_used_at):
            api_key_touch(key, seen)
        return key.user, key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing or wrong.
        return self.keyword
