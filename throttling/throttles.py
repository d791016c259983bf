"""DRF throttle classes, one per layer. They declare which layers a view uses (a view with
`throttle_classes = []` is not limited); the layers of all of them are checked together in
one atomic limiter call, normally by `RateLimitMiddleware` before authentication (so
unauthenticated and failed-auth traffic is counted too). Without the middleware, the first
of these classes on a view makes that single call itself and the others reuse its result."""

from __future__ import annotations

from typing import ClassVar

from rest_framework.throttling import BaseThrottle


class LimiterThrottle(BaseThrottle):
    layer: ClassVar[str]

    def allow_request(self, request, view) -> bool:
        # Imported here: DRF imports these classes while rest_framework.views is still
        # loading, and the services import the error handler, which imports that module.
        from .responses import decision_error
        from .services import limiter_check_request

        django_request = request._request
        decision = getattr(django_request, "limiter_decision", None)
        if decision is None:
            layers = frozenset(
                t.layer for t in view.get_throttles() if isinstance(t, LimiterThrottle)
            )
            decision = limiter_check_request(
                request=django_request, layers=layers, user=request.user
            )
            django_request.limiter_decision = decision
        if not decision.allowed:
            # Raised (not `return False`) so the error names the layer and carries headers.
            raise decision_error(decision)
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


def layers_for_view_class(view_class) -> frozenset[str]:
    classes = getattr(view_class, "throttle_classes", ())
    return frozenset(
        c.layer for c in classes if isinstance(c, type) and issubclass(c, LimiterThrottle)
    )
