from __future__ import annotations

import datetime as dt

from django.utils import timezone

from .models import Plan, TokenUsage


def month_start(now: dt.datetime | None = None) -> dt.date:
    now = now or timezone.now()
    return now.date().replace(day=1)


def plan_default() -> Plan:
    plan = Plan.objects.filter(is_default=True).first()
    return plan or Plan.objects.get(tier=Plan.Tier.FREE)


def plan_for_user(user) -> Plan:
    """The user's own plan, else the default one (new users are on free)."""
    if getattr(user, "plan_id", None):
        return user.plan
    return plan_default()


def tokens_used_this_month(*, user) -> int:
    usage = TokenUsage.objects.filter(user=user, month=month_start()).first()
    return usage.total_tokens if usage else 0
