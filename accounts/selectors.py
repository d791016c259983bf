from __future__ import annotations

from throttling.selectors import plan_for_user, tokens_used_this_month

from .models import ApiKey


def api_key_list(*, user):
    return ApiKey.objects.filter(user=user).order_by("-created_at")


def user_profile_get(*, user) -> dict:
    """What `GET /api/v1/me/` shows: the caller, their plan and their usage."""
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
