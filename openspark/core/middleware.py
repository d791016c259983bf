"""Guarantees the error shape on /api/ for responses Django produced outside DRF
(unknown URLs, 500s from middleware, CSRF failures, oversized bodies); counts every answer
for the metrics."""

import logging
import time

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import OperationalError

from .errors import DATABASE_RETRY_AFTER, DATABASE_UNAVAILABLE, error_response
from .metrics import http_request_observe

logger = logging.getLogger(__name__)

_STATUS_CODES = {
    400: ("validation_error", "The request is invalid."),
    401: ("not_authenticated", "Authentication credentials were not provided."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    413: ("file_too_large", "The request body is too large."),
    500: ("server_error", "Internal server error; it has been logged."),
}


def _is_api(request) -> bool:
    return request.path.startswith("/api/v1/")


def _body_too_big(request) -> bool:
    """DRF's JSON parser reads the raw stream, bypassing Django's DATA_UPLOAD_MAX_MEMORY_SIZE
    check; file uploads (multipart) have their own per-endpoint limits."""
    if request.content_type == "multipart/form-data":
        return False
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE


class ApiErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _is_api(request) and _body_too_big(request):
            return error_response(
                "file_too_large",
                f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
                413,
            )
        response = self.get_response(request)
        if not _is_api(request) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        code, message = _STATUS_CODES.get(
            response.status_code, ("error", response.reason_phrase or "Error")
        )
        return error_response(code, message, response.status_code)

    def process_exception(self, request, exception):
        if not _is_api(request):
            return None
        if isinstance(exception, RequestDataTooBig):
            return error_response("file_too_large", str(exception), 413)
        if isinstance(exception, OperationalError):  # as in errors.api_exception_handler
            logger.warning("Database unavailable on %s: %s", request.path, exception)
            return error_response(
                "dependency_unavailable",
                DATABASE_UNAVAILABLE,
                503,
                headers={"Retry-After": DATABASE_RETRY_AFTER},
            )
        logger.exception("Unhandled error on %s", request.path, exc_info=exception)
        return error_response("server_error", _STATUS_CODES[500][1], 500)


class MetricsMiddleware:
    """Counts every HTTP answer by method, URL name and status, as the client gets it: it is
    the outermost middleware, so the limiter's 429s and the JSON error pages are included.
    Streaming responses (SSE) are timed to their headers."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        http_request_observe(
            request=request, status=response.status_code, seconds=time.perf_counter() - started
        )
        return response
