from django.urls import path

from .apis import ApiKeyListCreateApi, ApiKeyRevokeApi, MeApi

urlpatterns = [
    path("me/", MeApi.as_view(), name="me"),
    path("api-keys/", ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("api-keys/<id:key_id>/", ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
]
