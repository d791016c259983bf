"""Enforces the limiter on /api/v1/ before DRF authenticates (DRF runs its throttles after
authentication and permissions, so 401s and failed API keys would otherwise go uncounted),
and puts the rate-limit headers on every API response."""

from __future__ import annotations

from functools import lru_cache

from rest_framework.settings import api_settings

from openspark.core.middleware import ApiErrorMiddleware

from .limiter import ALLOWED
from .responses import decision_headers, decision_response
from .services import limiter_check_request
from .throttles import layers_for_view_class

API_PREFIX = "/api/v1/"


@lru_cache(maxsize=1024)
def view_layers(view_class) -> frozenset[str]:
    """The layers a view class's throttle classes name (memoised: checked per request)."""
    return layers_for_view_class(view_class)


def _default_layers() -> frozenset[str]:
    return layers_for_view_class(
        type("Defaults", (), {"throttle_classes": api_settings.DEFAULT_THROTTLE_CLASSES})
    )


class RateLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        response = self.get_response(request)
        decision = getattr(request, "limiter_decision", None)
        if decision is None:
            # Never reached a view (unknown URL, CSRF refusal, ...): still counted, with the
            # default layers, and refused if over.
            decision = limiter_check_request(request=request, layers=_default_layers())
            request.limiter_decision = decision
            if not decision.allowed:
                response = decision_response(decision)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            # Django's own HTML error pages are replaced with the JSON error shape by the outer
            # ApiErrorMiddleware, which would drop our headers: shape the error here first.
            response = ApiErrorMiddleware(lambda _request: response)(request)
        for name, value in decision_headers(decision).items():
            response[name] = value
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not request.path.startswith(API_PREFIX):
            return None
        decision = getattr(request, "limiter_decision", None)
        if decision is None:
            view_class = getattr(view_func, "cls", None)
            layers = view_layers(view_class) if view_class is not None else _default_layers()
            if not layers:
                request.limiter_decision = ALLOWED
                return None
            decision = limiter_check_request(request=request, layers=layers)
            request.limiter_decision = decision
        # else: the edge (openspark/edge.py) made this request's check before handing it on.
        if not decision.allowed:
            return decision_response(decision)
        return None
