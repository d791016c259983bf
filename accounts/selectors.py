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
from django.core import signing
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext as _

from knowledge.selectors import knowledge_quota_status_get
from openspark.core.cache import PLANS_SCOPE, USER_PROFILE, cached, user_scope
from openspark.core.errors import ApplicationError
from throttling.selectors import month_start, plan_for_user, token_usage_this_month

from .models import ApiKey, EmailVerification

# Verification links carry a token signed with SECRET_KEY under this salt, timestamped: good for
# ACCOUNT_EMAIL_VERIFICATION_MAX_AGE seconds, and only while its user's verification is pending.
VERIFY_SALT = "accounts.email-verification"


class InvalidLink(ApplicationError):
    code = "invalid_link"


def email_verification_get(*, token: str) -> EmailVerification:
    """The verification a link is for; InvalidLink when it is forged, altered, expired, for
    another address than the account's, or for an account that never had one pending."""
    invalid = InvalidLink(_("This verification link is invalid or has expired."))
    try:
        data = signing.loads(
            token, salt=VERIFY_SALT, max_age=settings.ACCOUNT_EMAIL_VERIFICATION_MAX_AGE
        )
    except signing.BadSignature:  # SignatureExpired included
        raise invalid from None
    verification = (
        EmailVerification.objects.select_related("user")
        .filter(user_id=data["u"], email=data["e"], user__email=data["e"])
        .first()
    )
    if verification is None:
        raise invalid
    return verification


def api_key_list(*, user):
    return ApiKey.objects.filter(user=user).order_by("-created_at")


@cached(
    USER_PROFILE,
    # The month is part of the key so "tokens used this month" starts over on the 1st.
    key=lambda *, user: (user.id, month_start().isoformat()),
    # User saves, token usage and reservations, and changes to the user's knowledge bases and
    # documents bump the user's scope; plan edits bump PLANS_SCOPE.
    version_of=lambda *, user: [user_scope(user.id), PLANS_SCOPE],
)
def user_profile_get(*, user) -> dict:
    """What `GET /api/v1/me/` shows: the caller, their plan and their usage."""
    # Re-read the row: the caller's object may predate a write whose version bump this read
    # already saw, and a value computed from it would be cached under the new version.
    user = get_user_model().objects.select_related("plan").get(pk=user.pk)
    plan = plan_for_user(user)
    used, reserved = token_usage_this_month(user_id=user.id)
    quota = plan.monthly_token_quota
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
            "monthly_token_quota": quota,
            "storage_quota_bytes": plan.storage_quota_bytes,
            "document_quota": plan.document_quota,
            "knowledge_base_quota": plan.knowledge_base_quota,
        },
        "tokens": {
            "used_this_month": used,
            "reserved": reserved,
            "quota": quota,
            "remaining": max(0, quota - used - reserved) if quota else None,
        },
        "knowledge": knowledge_quota_status_get(user=user),
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
