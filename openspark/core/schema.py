"""The OpenAPI schema's naming and the API key's security scheme (drf-spectacular).

Views nest their serializers (`MeApi.OutputSerializer`), and drf-spectacular names a
component after the class alone, so every `OutputSerializer` would be one component `Output`
and all but one of them described wrongly; nested ones are named after their view instead
(`MeOutput`)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


class AutoSchema(SpectacularAutoSchema):
    def get_serializer_name(self, serializer, direction) -> str:
        name = super().get_serializer_name(serializer, direction)
        outer, _dot, _inner = type(serializer).__qualname__.rpartition(".")
        return f"{outer.removesuffix('Api')}{name}" if outer else name


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`osk_…`) made by its owner: `Bearer <key>`.",
        }
