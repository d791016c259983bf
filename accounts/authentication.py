"""`Authorization: Bearer <api key>` for the DRF API (and the SSE stream view).

This is the only parser of the header: DRF's `get_authorization_header(request).split()`,
so the scheme is matched case-insensitively and any whitespace separates it from the key.
The rate limiter never reads the header; it limits the user this class authenticated
(throttling.identity).

Every API request authenticates, so the key's row and its user's are cached (namespace
`api_key`, scope `api_key:<hash>`), stored by field name under a key that holds a fingerprint
of the models' fields (a migration never misreads an older row). Any write to the key or its
user bumps the scope (accounts/receivers.py), so a revoked key or a deactivated user is
refused from the next request on. Unknown keys are not cached in Redis (a flood of random keys
must not fill it) but remembered per process for a few seconds, so the same bad key does not
cost a query per request."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading

from cachetools import TTLCache
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import authentication, exceptions

from openspark.core.cache import API_KEY, api_key_scope, cache_value_set
from openspark.core.cache.service import Seen, cache_value_read
from openspark.core.state import on_reset

from .keys import KEY_PREFIX, api_key_hash
from .models import ApiKey

# last_used_at is informative; writing it on every request would turn reads into writes.
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def _fields(model, *, without: tuple[str, ...] = ()) -> tuple[str, ...]:
    # In the model's concrete-field order, as Model.from_db takes them.
    return tuple(f.attname for f in model._meta.concrete_fields if f.attname not in without)


_KEY_FIELDS = _fields(ApiKey)
# Not the password: the user is built with it deferred, so a save() cannot blank it.
_USER_FIELDS = _fields(get_user_model(), without=("password",))
_SCHEMA = hashlib.sha256(repr((_KEY_FIELDS, _USER_FIELDS)).encode()).hexdigest()[:12]

_unknown: TTLCache = TTLCache(maxsize=10_000, ttl=5)
_unknown_lock = threading.Lock()
on_reset(_unknown.clear)


def _api_key_load(digest: str) -> ApiKey | None:
    return ApiKey.objects.select_related("user").filter(key_hash=digest).first()


def _row(instance, fields: tuple[str, ...]) -> dict:
    return {name: getattr(instance, name) for name in fields}


def _from_row(model, fields: tuple[str, ...], row: dict):
    return model.from_db("default", fields, [row[name] for name in fields])


def _api_key_from_row(row: dict) -> ApiKey:
    key = _from_row(ApiKey, _KEY_FIELDS, row["key"])
    key.user = _from_row(get_user_model(), _USER_FIELDS, row["user"])
    return key


def _api_key_row(key: ApiKey) -> dict:
    return {"key": _row(key, _KEY_FIELDS), "user": _row(key.user, _USER_FIELDS)}


def _cache_key(digest: str) -> tuple[str, str]:
    return (digest, _SCHEMA)


def _api_key_active(raw_key: str) -> tuple[ApiKey | None, Seen | None]:
    """The active key for a raw value (with its user) or None, and what its cached-row read
    saw (for `api_key_touch`)."""
    if not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
        return None, None
    digest = api_key_hash(raw_key)
    with _unknown_lock:
        if digest in _unknown:
            return None, None
    scope = api_key_scope(digest)
    row, seen = cache_value_read(API_KEY, key=_cache_key(digest), scopes=scope)
    if row is not None:
        key = _api_key_from_row(row)
    else:
        key = _api_key_load(digest)
        if key is None:
            with _unknown_lock:
                _unknown[digest] = True
            return None, None
        # Under the versions the miss saw: a write that committed after the miss is never
        # hidden by this (older) row.
        cache_value_set(
            API_KEY, key=_cache_key(digest), value=_api_key_row(key), scopes=scope, seen=seen
        )
    if not key.is_active or not key.user.is_active:
        return None, seen
    return key, seen


def api_key_resolve(raw_key: str) -> ApiKey | None:
    """The active key for a raw value (with its user), or None."""
    return _api_key_active(raw_key)[0]


def api_key_touch(key: ApiKey, seen: Seen | None) -> None:
    """Record a use, once a minute at most. The save does not invalidate the cached row
    (accounts/receivers.py); the row is stored again with the new time under the versions
    `seen` read, so a write to the key or its user since then (which moved them) is never
    undone."""
    if key.last_used_at is not None and timezone.now() - key.last_used_at < (_LAST_USED_RESOLUTION):
        return
    key.last_used_at = timezone.now()
    key.save(update_fields=["last_used_at"])
    if seen is not None:
        digest = key.key_hash
        cache_value_set(
            API_KEY,
            key=_cache_key(digest),
            value=_api_key_row(key),
            scopes=api_key_scope(digest),
            seen=seen,
        )


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
        key, seen = _api_key_active(raw_key)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key.")
        api_key_touch(key, seen)
        return key.user, key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing or wrong.
        return self.keyword
