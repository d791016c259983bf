"""OpenAPI (drf-spectacular) description of `Authorization: Bearer <api key>`; imported in
AccountsConfig.ready() so the schema generator finds it."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`osk_…`), created on the account page.",
        }
