from __future__ import annotations

from django.contrib.auth import get_user_model

from knowledge.selectors import knowledge_quota_status_get
from openspark.core.cache import PLANS_SCOPE, USER_PROFILE, cached, user_scope
from throttling.selectors import month_start, plan_for_user, token_usage_this_month

from .models import ApiKey


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
