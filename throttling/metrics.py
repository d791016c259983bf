"""The limiter's decisions as Prometheus counters, classified exactly as the staff statistics
count them (`selectors.limiter_stats_get`, from the per-minute signatures of limiter.py): per
layer `allowed` (the request was admitted; shadow refusals excepted), `denied` (the layer that
refused it), `near_limit` (admitted with less than THROTTLE_NEAR_LIMIT_RATIO of the budget
left) and `shadow_denied` (a shadow rule that would have refused). Decisions taken without
Redis (fail open / fail closed) are counted too, and by `openspark_limiter_degraded_total`;
the staff statistics, kept in Redis, cannot see those."""

from __future__ import annotations

from django.conf import settings
from prometheus_client import Counter

from .limiter import LimitDecision

LIMITER_DECISIONS = Counter(
    "openspark_limiter_decisions_total",
    "Rate limiter outcomes per layer (allowed, denied, near_limit, shadow_denied).",
    ["layer", "outcome"],
)
LIMITER_DEGRADED = Counter(
    "openspark_limiter_degraded_total",
    "Limiter decisions taken without Redis, by fail mode.",
    ["mode"],
)


def limiter_decision_count(decision: LimitDecision) -> None:
    if decision.degraded:
        closed = decision.code == "dependency_unavailable"
        LIMITER_DEGRADED.labels("fail_closed" if closed else "fail_open").inc()
        if closed:  # no per-layer states without Redis
            LIMITER_DECISIONS.labels(decision.layer or "unknown", "denied").inc()
            return
    near = settings.THROTTLE_NEAR_LIMIT_RATIO
    for state in decision.states:
        if state.shadow and not state.admits:
            LIMITER_DECISIONS.labels(state.layer, "shadow_denied").inc()
        elif decision.allowed:
            LIMITER_DECISIONS.labels(state.layer, "allowed").inc()
            if state.remaining < state.limit * near:
                LIMITER_DECISIONS.labels(state.layer, "near_limit").inc()
        elif state.layer == decision.layer:
            LIMITER_DECISIONS.labels(state.layer, "denied").inc()
