from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.utils.crypto import constant_time_compare

from openspark.core.cache import PLANS_SCOPE, USER_PROFILE, cached, user_scope
from throttling.selectors import month_start, plan_for_user, tokens_used_this_month

from .models import ApiKey


def api_key_list(*, user):
    return ApiKey.objects.filter(user=user).order_by("-created_at")


@cached(
    USER_PROFILE,
    # The month is part of the key so "tokens used this month" starts over on the 1st.
    key=lambda *, user: (user.id, month_start().isoformat()),
    # User saves and token usage bump the user's scope; plan edits bump PLANS_SCOPE.
    version_of=lambda *, user: [user_scope(user.id), PLANS_SCOPE],
)
def user_profile_get(*, user) -> dict:
    """What `GET /api/v1/me/` shows: the caller, their plan and their usage."""
    # Re-read the row: the caller's object may predate a write whose version bump this read
    # already saw, and a value computed from it would be cached under the new version.
    user = get_user_model().objects.select_related("plan").get(pk=user.pk)
    plan = plan_for_user(user)
    used = tokens_used_this_month(user=user)
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "is_staff": user.is_staff,
        "date_joined": user.date_joined,
        "plan": {
            "tier": plan.tier,
            "name": plan.name,
            "requests_per_minute": plan.requests_per_minute,
            "endpoint_limits": plan.endpoint_limits,
            "monthly_token_quota": plan.monthly_token_quota,
        },
        "tokens": {
            "used_this_month": used,
            "quota": plan.monthly_token_quota,
            "remaining": max(0, plan.monthly_token_quota - used)
            if plan.monthly_token_quota
            else None,
        },
    }


def user_profile_warm(*, user) -> int:
    """Cache warmer (settings.CACHE_USER_WARMERS)."""
    user_profile_get(user=user)
    return 1


def session_user_get(*, session_key: str | None):
    """The user the session `session_key` authenticates right now, or None: the session was
    flushed (logout) or expired, the password changed (its hash no longer matches), or the
    user was deactivated or deleted (the backend refuses them).

    Django's per-request check on a freshly loaded session, for a long-lived websocket: one
    session-store read (the cache, with cached_db sessions) and one user query. Read-only,
    unlike `django.contrib.auth.get_user`, which may rotate the session key (a fallback
    secret matched) — a socket cannot hand the browser the new cookie."""
    if not session_key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user_id, backend_path = session.get(SESSION_KEY), session.get(BACKEND_SESSION_KEY)
    if user_id is None or backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        return None
    session_hash = session.get(HASH_SESSION_KEY) or ""
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    if not any(constant_time_compare(session_hash, known) for known in hashes):
        return None
    return user
