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
