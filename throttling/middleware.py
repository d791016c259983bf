"""Rate-limit headers on every /api/v1/ response, and the check of what DRF's throttle
classes did not check.

DRF runs a view's throttles after authentication and permissions. A request DRF refused
before its throttles (failed authentication, permission denied) or that no DRF view served
(an unknown URL) is checked here once the response exists, as the caller Django and DRF
authenticated (nobody, after a failed authentication: the IP layer), with the view's layers
or the defaults; if over a limit, the 429 replaces the response. So every API request is
counted exactly once, and no credential, good or bad, escapes the limiter."""

from __future__ import annotations

from rest_framework.settings import api_settings

from openspark.core.middleware import ApiErrorMiddleware

from .responses import decision_headers, decision_response
from .services import limiter_check_request
from .throttles import RequestLimiter, layers_of, view_layers

API_PREFIX = "/api/v1/"


class RateLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        state = request.limiter = RequestLimiter()
        response = self.get_response(request)
        if state.decision is None:
            layers = (
                layers_of(api_settings.DEFAULT_THROTTLE_CLASSES)
                if state.layers is None
                else state.layers
            )
            if not layers:
                return response  # a view that is not limited
            state.decision = limiter_check_request(request=request, layers=layers)
            if not state.decision.allowed:
                response = decision_response(state.decision)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            # Django's own HTML error pages are replaced with the JSON error shape by the outer
            # ApiErrorMiddleware, which would drop our headers: shape the error here first.
            response = ApiErrorMiddleware(lambda _request: response)(request)
        for name, value in decision_headers(state.decision).items():
            response[name] = value
        return response

    def process_view(self, request, view_func, view_args, view_kwargs):
        state = getattr(request, "limiter", None)
        view_class = getattr(view_func, "cls", None)  # DRF's as_view() sets it
        if state is not None and view_class is not None:
            state.layers = view_layers(view_class)
        return None
