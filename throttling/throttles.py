"""DRF throttle classes, one per layer: where API views are limited. A view names the layers
it is under by its throttle classes (`throttle_classes = []`: not limited); the first of them
checks all of them together in one limiter round trip, as the caller DRF authenticated
(throttling.identity), and the others reuse that decision.

The decision is kept on the request's `limiter` (set by `RateLimitMiddleware`, which puts the
rate-limit headers on the response, and checks what DRF did not: see the middleware)."""

from __future__ import annotations

from typing import ClassVar

from rest_framework.throttling import BaseThrottle


class RequestLimiter:
    """Per request: the view's layers and the decision, once made."""

    __slots__ = ("decision", "layers")

    def __init__(self) -> None:
        self.layers: frozenset[str] | None = None
        self.decision = None


class LimiterThrottle(BaseThrottle):
    layer: ClassVar[str]

    def allow_request(self, request, view) -> bool:
        # Imported here: DRF imports these classes while rest_framework.views is still
        # loading, and the services import the error handler, which imports that module.
        from .responses import decision_error
        from .services import limiter_check_request

        # DRF's request reads attributes it does not have from Django's, so this is the
        # middleware's object (absent when a view is called without it, as in unit tests).
        state = getattr(request, "limiter", None) or RequestLimiter()
        if state.decision is None:
            state.decision = limiter_check_request(request=request, layers=view_layers(view))
        if not state.decision.allowed:
            # Raised (not `return False`) so the error names the layer and carries headers.
            raise decision_error(state.decision)
        return True


class GlobalRateThrottle(LimiterThrottle):
    layer = "global"


class IpRateThrottle(LimiterThrottle):
    """Requests without a valid identity, per client IP."""

    layer = "ip"


class PlanRateThrottle(LimiterThrottle):
    """Per user, at their plan tier's requests/min."""

    layer = "plan"


class EndpointGroupRateThrottle(LimiterThrottle):
    """conversations / messages / knowledge per user (or IP), plus staff's extra rules."""

    layer = "endpoint"


def layers_of(throttle_classes) -> frozenset[str]:
    return frozenset(
        c.layer for c in throttle_classes if isinstance(c, type) and issubclass(c, LimiterThrottle)
    )


def view_layers(view) -> frozenset[str]:
    """The layers an APIView instance or class is under."""
    return layers_of(getattr(view, "throttle_classes", ()))
