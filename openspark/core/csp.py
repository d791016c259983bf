"""Content-Security-Policy on every response Django makes (CSP_ENABLED; production always).

The policy (CSP_DIRECTIVES) allows scripts, styles and connections (websockets included) from
our own origin only: no inline script, no event handler attribute, no eval, so text that
reaches a page through a bug in escaping or sanitising still cannot run. Pages pass data to
their scripts as JSON (`json_script`, read by static/js/page-data.js). A view that needs
more says so with `csp_override` (Swagger UI's page has an inline <style>)."""

from __future__ import annotations

from functools import wraps

from django.conf import settings

HEADER = "Content-Security-Policy"


def csp_header(directives: dict[str, str]) -> str:
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def csp_override(**directives: str):
    """Decorate a view: its responses' policy is CSP_DIRECTIVES with these directives
    replaced (`style_src="'self' 'unsafe-inline'"` → `style-src`)."""
    changes = {name.replace("_", "-"): value for name, value in directives.items()}

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            response.csp_directives = {**settings.CSP_DIRECTIVES, **changes}
            return response

        return wrapped

    return decorator


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if settings.CSP_ENABLED and HEADER not in response:
            directives = getattr(response, "csp_directives", settings.CSP_DIRECTIVES)
            response[HEADER] = csp_header(directives)
        return response
