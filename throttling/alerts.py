"""Limiter alerts for staff: Redis unreachable (fail open / fail closed), the global layer
nearly used up, a spike of refusals. De-duplicated per process and in the database."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from openspark.core.state import on_reset

from .limiter import LimitDecision, breaker
from .metrics import limiter_decision_count
from .models import Alert
from .notices import alert_notify_staff

logger = logging.getLogger(__name__)


class _DenyRate:
    """This process's allowed/denied counts in the current minute, for the spike alert."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()
        on_reset(self.reset)

    def reset(self) -> None:
        self.minute, self.total, self.denied = 0, 0, 0

    def record(self, allowed: bool) -> tuple[int, int]:
        minute = int(time.time() // 60)
        with self.lock:
            if minute != self.minute:
                self.minute, self.total, self.denied = minute, 0, 0
            self.total += 1
            self.denied += 0 if allowed else 1
            return self.total, self.denied


_deny_rate = _DenyRate()


def decision_monitor(decision: LimitDecision) -> None:
    """Count a limiter decision for /metrics and raise the alerts it calls for."""
    limiter_decision_count(decision)
    if decision.degraded:
        if decision.code == "dependency_unavailable":
            alert_raise(
                kind=Alert.Kind.FAIL_CLOSED,
                message="Rate limiter cannot reach Redis; fail-closed layers refuse requests.",
                details={"error": breaker.last_error, "layer": decision.layer},
            )
        else:
            alert_raise(
                kind=Alert.Kind.FAIL_OPEN,
                message="Rate limiter cannot reach Redis; using per-process fallback buckets.",
                details={"error": breaker.last_error},
            )
        return
    for state in decision.states:
        if state.layer == "global" and state.remaining < state.limit * (
            settings.THROTTLE_NEAR_LIMIT_RATIO
        ):
            alert_raise(
                kind=Alert.Kind.GLOBAL_NEAR_LIMIT,
                message="The global rate limit is nearly used up.",
                details={"limit": state.limit, "remaining": state.remaining},
            )
    total, denied = _deny_rate.record(decision.allowed)
    if (
        not decision.allowed
        and denied >= settings.THROTTLE_ALERT_DENY_MIN
        and denied >= total * settings.THROTTLE_ALERT_DENY_RATIO
    ):
        alert_raise(
            kind=Alert.Kind.DENY_SPIKE,
            message="Many requests are being refused by the rate limiter.",
            details={"denied": denied, "total": total, "last_layer": decision.layer},
        )


_alerts_raised: dict[str, float] = {}
_alerts_lock = threading.Lock()
on_reset(_alerts_raised.clear)


def alert_raise(*, kind: str, message: str, details: dict | None = None) -> None:
    """Log and record an alert for staff, de-duplicated: within THROTTLE_ALERT_DEDUP_SECONDS
    a process writes one kind at most once, and the database row of the same kind is bumped
    (count, last_seen) rather than duplicated. Never raises: alerting must not break a
    request."""
    now = time.monotonic()
    window = settings.THROTTLE_ALERT_DEDUP_SECONDS
    with _alerts_lock:
        if _alerts_raised.get(kind, -math.inf) > now - window:
            return
        _alerts_raised[kind] = now
    logger.warning("Rate limiter alert %s: %s %s", kind, message, details or {})
    try:
        moment = timezone.now()
        updated = Alert.objects.filter(
            kind=kind, acknowledged=False, last_seen__gte=moment - dt.timedelta(seconds=window)
        ).update(count=F("count") + 1, last_seen=moment, details=details or {})
        if not updated:
            alert = Alert.objects.create(
                kind=kind, message=message, details=details or {}, last_seen=moment
            )
            alert_notify_staff(alert)
    except Exception:  # the database may be the thing that is down
        logger.exception("Could not record rate limiter alert %s", kind)


def alerts_reset_dedup() -> None:
    """Forget which alerts this process raised (after staff acknowledge)."""
    with _alerts_lock:
        _alerts_raised.clear()
