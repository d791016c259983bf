"""How a limiter decision reads over HTTP: headers on every API response (IETF httpapi
RateLimit draft syntax plus the X-RateLimit-* trio) and the 429/403/503 error."""

from __future__ import annotations

import math

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from openspark.core.errors import ApplicationError, error_response

from .limiter import LayerState, LimitDecision
from .models import Plan

STATUS_FOR_CODE = {"rate_limited": 429, "blocked": 403, "dependency_unavailable": 503}
# How the endpoint groups (throttling.rules) read in a message.
GROUP_NAMES = {
    "conversations": gettext_lazy("conversations"),
    "messages": gettext_lazy("messages (sending)"),
    "knowledge": gettext_lazy("knowledge"),
    "polling": gettext_lazy("polling (reading messages and tasks)"),
}


def decision_headers(decision: LimitDecision) -> dict[str, str]:
    """`RateLimit-Policy`/`RateLimit` and `X-RateLimit-*` for the tightest layer (the
    refusing one when refused); reset values are seconds from now. `Retry-After` on refusal."""
    headers: dict[str, str] = {}
    state = decision.tightest()
    if state is not None:
        reset = math.ceil(state.reset)
        headers["RateLimit-Policy"] = f'"{state.layer}";q={state.limit};w={state.period}'
        headers["RateLimit"] = f'"{state.layer}";r={state.remaining};t={reset}'
        headers["X-RateLimit-Limit"] = str(state.limit)
        headers["X-RateLimit-Remaining"] = str(state.remaining)
        headers["X-RateLimit-Reset"] = str(reset)
    if not decision.allowed and decision.code != "blocked":
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
    return headers


def decision_error(decision: LimitDecision) -> ApplicationError:
    """The refusal in the API's one error shape, naming the layer."""
    status = STATUS_FOR_CODE.get(decision.code, 429)
    if decision.code == "blocked":
        return ApplicationError(
            _("Access from this account or address is blocked."), code="blocked", status_code=403
        )
    retry_after = max(1, math.ceil(decision.retry_after))
    if decision.code == "dependency_unavailable":
        message = _("The rate limiter is unavailable; retry in %(retry)s s.") % {
            "retry": retry_after
        }
        details = {"layer": decision.layer, "retry_after": retry_after}
    else:
        state = decision.tightest()
        message = _("Too many requests: %(which)s. Retry in %(retry)s s.") % {
            "which": limit_description(decision, state),
            "retry": retry_after,
        }
        details = {"layer": decision.layer, "retry_after": retry_after}
        if state is not None:
            details |= {"limit": state.limit, "window_seconds": state.period}
    return ApplicationError(
        message,
        code=decision.code,
        status_code=status,
        details=details,
        headers=decision_headers(decision),
    )


def limit_description(decision: LimitDecision, state: LayerState | None) -> str:
    """Which limit refused, in words, e.g. "the messages (sending) limit of your Pro plan,
    600 per minute"."""
    layer = decision.layer or ""
    values = {
        "layer": layer,
        "limit": f"{state.limit:,}" if state else "?",
        "window": _("minute")
        if state is None or state.period == 60
        else _("%(seconds)s s") % {"seconds": state.period},
        "group": GROUP_NAMES.get(layer.removeprefix("endpoint:"), layer),
        "plan": Plan.Tier(decision.plan_tier).label
        if decision.plan_tier in Plan.Tier.values
        else "",
    }
    if layer == "global":
        text = _("the service-wide limit for everyone together, %(limit)s per %(window)s")
    elif layer == "ip":
        text = _("the limit for your address without signing in, %(limit)s per %(window)s")
    elif layer == "plan" and values["plan"]:
        text = _("the request limit of your %(plan)s plan, %(limit)s per %(window)s")
    elif layer.startswith("endpoint:") and values["plan"]:
        text = _("the %(group)s limit of your %(plan)s plan, %(limit)s per %(window)s")
    elif layer.startswith("endpoint:"):
        text = _("the %(group)s limit for your address, %(limit)s per %(window)s")
    else:
        text = _("the %(layer)s limit, %(limit)s per %(window)s")
    return text % values


def decision_response(decision: LimitDecision):
    error = decision_error(decision)
    return error_response(
        error.code, error.message, error.status_code, error.details, error.headers
    )
