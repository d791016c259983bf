"""Notifications the limiter and the token quota send (openspark.core's notification service):
a user at 80 % and at 100 % of their monthly token quota, once per month each, and staff on
a new limiter alert, once per alert row (the alert's own de-duplication)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _

from openspark.core.models import Notification
from openspark.core.services import notification_send, notification_send_staff

from .models import Alert
from .selectors import limiter_config_get, month_start, next_month_start, tokens_used_this_month

QUOTA_THRESHOLDS = (100, 80)  # percent, highest first


def quota_thresholds_notify(*, user_id: int) -> None:
    """After tokens are recorded: notify the highest threshold the month's use has reached,
    unless already notified this month (dedup key `quota:<YYYY-MM>:<percent>`). A jump past
    both sends only the 100 % one."""
    user = get_user_model().objects.filter(id=user_id).first()
    if user is None:
        return
    quota = limiter_config_get().plan(getattr(user, "plan_id", None)).monthly_token_quota
    if not quota:
        return
    used = tokens_used_this_month(user=user)
    reached = next((p for p in QUOTA_THRESHOLDS if used * 100 >= quota * p), None)
    if reached is None:
        return
    details = {
        "used": f"{used:,}",
        "quota": f"{quota:,}",
        "resets": f"{next_month_start():%Y-%m-%d}",
    }
    if reached == 100:
        kind, level = Notification.Kind.QUOTA_EXHAUSTED, "error"
        title = _("Your monthly token quota is used up")
        body = _("%(used)s of %(quota)s tokens used; new messages wait until %(resets)s.")
    else:
        kind, level = Notification.Kind.QUOTA_WARNING, "warning"
        title = _("You have used %(percent)d%% of this month's tokens") % {"percent": reached}
        body = _("%(used)s of %(quota)s tokens used; the quota resets on %(resets)s.")
    notification_send(
        user=user,
        kind=kind,
        level=level,
        title=title,
        body=body % details,
        url="/accounts/",
        dedup_key=f"quota:{month_start():%Y-%m}:{reached}",
    )


def alert_notify_staff(alert: Alert) -> None:
    """Every active staff user hears of a new alert row once (its repeats bump the row)."""
    notification_send_staff(
        kind=Notification.Kind.STAFF_ALERT,
        level="warning",
        title=_("Rate limiter alert: %(kind)s") % {"kind": alert.get_kind_display()},
        body=alert.message,
        url=f"/admin/throttling/alert/{alert.id}/change/",
        dedup_key=f"alert:{alert.id}",
    )
