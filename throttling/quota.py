"""The monthly LLM token quota: a reply's most tokens are reserved before it is queued, and
what it used is charged when it ends (docs/throttling.md, "Monthly token quota").

Invariant: a reservation is taken only while used + reserved + it <= quota, by one
conditional UPDATE of the user's TokenUsage row (atomic on SQLite and PostgreSQL alike), so
the replies admitted together can use no more than the quota as long as each uses no more
than it reserved. Settling is not idempotent by itself: callers settle once, in the
transaction of the status change that ends the reply (conversations.services).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from django.db import models
from django.db.models import F
from django.db.models.functions import Greatest
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone
from django.utils.translation import gettext as _

from openspark.core.cache import cache_bump, user_scope
from openspark.core.errors import ApplicationError

from .models import TokenUsage
from .notices import quota_thresholds_notify
from .selectors import limiter_config_get, month_start, next_month_start

# Retry-After when the quota is held by replies in flight rather than used up: they give back
# what they do not use within seconds to minutes.
IN_FLIGHT_RETRY_SECONDS = 10


@dataclass(frozen=True, slots=True)
class Reservation:
    tokens: int  # 0: the plan is unlimited, nothing is held
    month: dt.date | None


def tokens_reserve(*, user, tokens: int) -> Reservation:
    """Hold `tokens` of the user's monthly quota. Call it inside the transaction that creates
    what it pays for, so a rollback gives them back. Raises 429 `quota_exceeded` when they do
    not fit. The quota comes from the limiter's configuration snapshot, like the limits."""
    quota = limiter_config_get().plan(getattr(user, "plan_id", None)).monthly_token_quota
    if not quota:
        return Reservation(tokens=0, month=None)
    month = month_start()
    usage, _created = TokenUsage.objects.get_or_create(user_id=user.id, month=month)
    held = (
        TokenUsage.objects.filter(pk=usage.pk)
        .filter(
            LessThanOrEqual(
                F("prompt_tokens") + F("completion_tokens") + F("reserved_tokens"), quota - tokens
            )
        )
        .update(reserved_tokens=F("reserved_tokens") + tokens)
    )
    if not held:
        usage.refresh_from_db()
        raise _quota_exceeded(
            quota=quota, used=usage.total_tokens, reserved=usage.reserved_tokens, needed=tokens
        )
    cache_bump(scope=user_scope(user.id))  # GET me/ shows what is reserved
    return Reservation(tokens=tokens, month=month)


def tokens_settle(
    *,
    user_id: int,
    prompt_tokens: int,
    completion_tokens: int,
    reserved: int = 0,
    month: dt.date | None = None,
) -> None:
    """Release `reserved` tokens and charge what was used, in one UPDATE of the month they
    were reserved in (this month when nothing was). F() arithmetic: concurrent workers add up."""
    usage, _created = TokenUsage.objects.get_or_create(
        user_id=user_id, month=month or month_start()
    )
    TokenUsage.objects.filter(pk=usage.pk).update(
        # Never below zero, should staff have cleared a reservation by hand meanwhile.
        reserved_tokens=Greatest(
            F("reserved_tokens") - reserved, 0, output_field=models.PositiveBigIntegerField()
        ),
        prompt_tokens=F("prompt_tokens") + max(0, prompt_tokens),
        completion_tokens=F("completion_tokens") + max(0, completion_tokens),
    )
    cache_bump(scope=user_scope(user_id))  # GET me/ shows tokens used: invalidate on commit
    quota_thresholds_notify(user_id=user_id)


def _quota_exceeded(*, quota: int, used: int, reserved: int, needed: int) -> ApplicationError:
    resets_at = next_month_start()
    if reserved and used + needed <= quota:
        retry_after = IN_FLIGHT_RETRY_SECONDS
    else:
        retry_after = max(1, math.ceil((resets_at - timezone.now()).total_seconds()))
    return ApplicationError(
        _(
            "Monthly token quota reached: this needs up to %(needed)s tokens, and of "
            "%(quota)s, %(used)s are used and %(reserved)s are held by replies in progress. "
            "It resets at %(resets_at)s."
        )
        % {
            "needed": needed,
            "quota": quota,
            "used": used,
            "reserved": reserved,
            "resets_at": resets_at.isoformat(),
        },
        code="quota_exceeded",
        status_code=429,
        details={
            "retry_after": retry_after,  # also for the websocket, which has no headers
            "resets_at": resets_at.isoformat(),
            "quota": quota,
            "used": used,
            "reserved": reserved,
            "needed": needed,
        },
        headers={"Retry-After": str(retry_after)},
    )
