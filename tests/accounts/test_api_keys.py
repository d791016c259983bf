import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.keys import api_key_hash
from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


def _bearer(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def test_key_is_shown_once_and_stored_hashed(auth_client, user):
    response = auth_client.post("/api/v1/api-keys/", {"name": "ci"}, format="json")
    assert response.status_code == 201
    raw_key = response.json()["key"]
    stored = ApiKey.objects.get(id=response.json()["id"])
    assert stored.key_hash == api_key_hash(raw_key)
    assert raw_key not in (stored.key_hash, stored.prefix)
    assert raw_key.startswith(stored.prefix)

    listing = auth_client.get("/api/v1/api-keys/").json()
    assert listing["count"] == 1
    assert "key" not in listing["results"][0]
    assert raw_key not in str(listing)


def test_bearer_key_authenticates_the_api(auth_client, user):
    raw_key = auth_client.post("/api/v1/api-keys/", {"name": "k"}, format="json").json()["key"]
    response = _bearer(raw_key).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json()["username"] == user.username
    assert ApiKey.objects.get(user=user).last_used_at is not None


def test_revoked_key_is_rejected(auth_client):
    created = auth_client.post("/api/v1/api-keys/", {"name": "k"}, format="json").json()
    assert auth_client.delete(f"/api/v1/api-keys/{created['id']}/").status_code == 204
    response = _bearer(created["key"]).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_expired_key_is_rejected(user):
    from accounts.services import api_key_create

    key, raw_key = api_key_create(
        user=user, name="old", expires_at=timezone.now() + dt.timedelta(seconds=60)
    )
    assert _bearer(raw_key).get("/api/v1/me/").status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = _bearer(raw_key).get("/api/v1/me/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_expiry_in_the_past_is_a_validation_error(auth_client):
    past = (timezone.now() - dt.timedelta(days=1)).isoformat()
    response = auth_client.post(
        "/api/v1/api-keys/", {"name": "k", "expires_at": past}, format="json"
    )
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "validation_error"
    assert "expires_at" in body["details"]


@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer a b", "Bearer osk_notarealkey", "Bearer \u00ff"]
)
def test_malformed_or_unknown_keys_get_401(header):
    client = APIClient()
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_cannot_see_or_revoke_another_users_key(auth_client, other_user):
    from accounts.services import api_key_create

    key, _ = api_key_create(user=other_user, name="theirs")
    assert auth_client.get("/api/v1/api-keys/").json()["count"] == 0
    response = auth_client.delete(f"/api/v1/api-keys/{key.id}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_api_keys_require_authentication(api_client):
    response = api_client.post("/api/v1/api-keys/", {"name": "x"}, format="json")
    assert response.status_code == 401
