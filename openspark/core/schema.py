"""The OpenAPI schema's naming (drf-spectacular). (The API key's security scheme is
declared by accounts, accounts/schema.py.)

Views nest their serializers (`MeApi.OutputSerializer`), and drf-spectacular names a
component after the class alone, so every `OutputSerializer` would be one component `Output`
and all but one of them described wrongly; nested ones are named after their view instead
(`MeOutput`)."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers


class AutoSchema(SpectacularAutoSchema):
    def get_serializer_name(self, serializer, direction) -> str:
        name = super().get_serializer_name(serializer, direction)
        outer, _dot, _inner = type(serializer).__qualname__.rpartition(".")
        return f"{outer.removesuffix('Api')}{name}" if outer else name


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    """The one error shape (openspark/core/errors.py), for error responses in the schema."""

    error = ErrorBodySerializer()


# The errors any API operation can answer, whatever the view declares (openspark/core/errors.py
# and the middleware in front of every view): bad input or query strings, an invalid or missing
# identity, a deny-listed caller or a failed CSRF check, the limiter, a database that is down.
_ANY_OPERATION = {
    "400": "`validation_error`: the body, a parameter or the query string is invalid "
    "(`details` names the fields); `bad_request` for a request Django refuses.",
    "401": "`not_authenticated`: no valid session or API key.",
    "403": "`permission_denied` (not allowed, or the CSRF check failed) or `blocked` "
    "(deny-listed).",
    "429": "`rate_limited` (a limiter layer) or `quota_exceeded`; `Retry-After` says when "
    "to come back.",
    "503": "`dependency_unavailable`: the database or another dependency is down; retry later.",
}
_WITH_OBJECT = {"404": "`not_found`: no such object, or it belongs to someone else."}
_WITH_PAGE = {"404": "`not_found`: no such page."}
_NAMING_OBJECTS = {"404": "`not_found`: an object the body names (`…_id`, `…_ids`) does not "
                   "exist or is not the caller's."}  # fmt: skip
_WITH_BODY = {
    "413": "`file_too_large`: the request body is past the size limit.",
    "415": "`unsupported_media_type`: not a content type this operation reads.",
}
_ERROR_COMPONENTS = {
    "Error": {
        "type": "object",
        "properties": {"error": {"$ref": "#/components/schemas/ErrorBody"}},
        "required": ["error"],
    },
    "ErrorBody": {
        "type": "object",
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "details": {"type": "object", "additionalProperties": {}},
        },
        "required": ["code", "details", "message"],
    },
}


def error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS): every operation documents
    the errors it can answer, in the one error shape, so the schema is honest about status
    codes (a fuzzer checks it, tests/reliability/test_fuzz.py). A view's own description of a
    status code is kept."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, component in _ERROR_COMPONENTS.items():
        schemas.setdefault(name, component)
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            parameters = operation.get("parameters", [])
            codes = dict(_ANY_OPERATION)
            if any(parameter["in"] == "path" for parameter in parameters):
                codes.update(_WITH_OBJECT)
            elif any(parameter["name"] == "page" for parameter in parameters):
                codes.update(_WITH_PAGE)
            if "requestBody" in operation:
                codes.update(_WITH_BODY)
                if "404" not in codes and _names_objects(operation["requestBody"], schemas):
                    codes.update(_NAMING_OBJECTS)
            responses = operation.setdefault("responses", {})
            for code, description in codes.items():
                responses.setdefault(code, _error_response(description, code == "429"))
    return result


def _names_objects(request_body: dict, schemas: dict) -> bool:
    for media in request_body.get("content", {}).values():
        schema = media.get("schema", {})
        if "$ref" in schema:
            schema = schemas.get(schema["$ref"].rpartition("/")[2], {})
        if any(name.endswith(("_id", "_ids")) for name in schema.get("properties", {})):
            return True
    return False


def _error_response(description: str, retry_after: bool) -> dict:
    response = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}
        }
    return response
