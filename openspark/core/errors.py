"""One error shape for the whole API:
`{"error": {"code": "<snake_case>", "message": "<human readable>", "details": {...}}}`."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """Raised by services for a rule the caller broke; the handler renders it as-is."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "validation_error"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None,
                 details: dict | None = None, headers: dict | None = None):  # fmt: skip
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status_code = status_code or self.status_code
        self.details = details or {}
        self.headers = headers or {}


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class DependencyUnavailable(ApplicationError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "dependency_unavailable"


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(code: str, message: str, status_code: int, details: dict | None = None,
                   headers: dict | None = None) -> JsonResponse:  # fmt: skip
    response = JsonResponse(error_body(code, message, details), status=status_code)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


_CODES: list[tuple[type[Exception], str]] = [
    (exceptions.ValidationError, "validation_error"),
    (exceptions.ParseError, "validation_error"),
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.AuthenticationFailed, "not_authenticated"),
    (exceptions.PermissionDenied, "permission_denied"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "rate_limited"),
]

_MESSAGES = {
    "validation_error": "The request is invalid; see details.",
    "not_found": "Not found.",
}


def _code_for(exc: exceptions.APIException) -> str:
    for klass, code in _CODES:
        if isinstance(exc, klass):
            return code
    return exc.default_code if isinstance(exc.default_code, str) else "error"


DATABASE_UNAVAILABLE = "The database is unavailable or busy; try again shortly."
DATABASE_RETRY_AFTER = "5"


def api_exception_handler(exc: Exception, context: dict) -> Response:
    if isinstance(exc, OperationalError):
        # The database is down, locked or out of pooled connections (Django wraps psycopg's
        # PoolTimeout as OperationalError): a dependency failure, not a bug in the request.
        logger.warning("Database unavailable: %s", exc)
        exc = DependencyUnavailable(
            DATABASE_UNAVAILABLE, headers={"Retry-After": DATABASE_RETRY_AFTER}
        )
    if isinstance(exc, RequestDataTooBig):  # as in middleware.ApiErrorMiddleware
        exc = ApplicationError(str(exc), code="file_too_large", status_code=413)
    elif isinstance(exc, SuspiciousOperation):
        # e.g. more query parameters than DATA_UPLOAD_MAX_NUMBER_FIELDS: the client's fault.
        exc = ApplicationError(str(exc), code="bad_request", status_code=400)
    if isinstance(exc, ApplicationError):
        return Response(
            error_body(exc.code, exc.message, exc.details),
            status=exc.status_code,
            headers=exc.headers,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return Response(
            error_body("server_error", "Internal server error; it has been logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    code = getattr(exc, "error_code", None) or _code_for(exc)
    if isinstance(exc, exceptions.ValidationError):
        details = response.data if isinstance(response.data, dict) else {"errors": response.data}
        message = _first_message(response.data) or _MESSAGES["validation_error"]
    else:
        details = getattr(exc, "error_details", None) or {}
        message = str(exc.detail) if not isinstance(exc.detail, (dict, list)) else str(exc)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        details = {"retry_after": int(exc.wait + 0.999), **details}
    response.data = error_body(code, message, details)
    return response


def _first_message(data) -> str | None:
    """The first human message in DRF's nested error structure, prefixed by its field."""
    if isinstance(data, list) and data:
        return _first_message(data[0])
    if isinstance(data, dict):
        for field, value in data.items():
            inner = _first_message(value)
            if inner:
                return inner if field in ("non_field_errors", "detail") else f"{field}: {inner}"
        return None
    return str(data) if data else None
