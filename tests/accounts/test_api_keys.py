import datetime as dt
import time

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


def test_key_is_shown_once_and_stored_hashed(session_client, user):
    response = session_client.post("/api/v1/api-keys/", {"name": "ci"}, format="json")
    assert response.status_code == 201
    raw_key = response.json()["key"]
    stored = ApiKey.objects.get(id=response.json()["id"])
    assert stored.key_hash == api_key_hash(raw_key)
    assert raw_key not in (stored.key_hash, stored.prefix)
    assert raw_key.startswith(stored.prefix)

    listing = session_client.get("/api/v1/api-keys/").json()
    assert listing["count"] == 1
    assert "key" not in listing["results"][0]
    assert raw_key not in str(listing)


def test_bearer_key_authenticates_the_api(session_client, user):
    raw_key = session_client.post("/api/v1/api-keys/", {"name": "k"}, format="json").json()["key"]
    response = _bearer(raw_key).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json()["username"] == user.username
    assert ApiKey.objects.get(user=user).last_used_at is not None


def test_revoked_key_is_rejected(session_client):
    created = session_client.post("/api/v1/api-keys/", {"name": "k"}, format="json").json()
    assert session_client.delete(f"/api/v1/api-keys/{created['id']}/").status_code == 204
    response = _bearer(created["key"]).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_expired_key_is_rejected(user):
    from accounts.services import api_key_create

    key, raw_key = api_key_create(
        user=user, name="old", expires_at=timezone.now() + dt.timedelta(seconds=1.5)
    )
    assert _bearer(raw_key).get("/api/v1/me/").status_code == 200  # now cached
    time.sleep(max(0.0, (key.expires_at - timezone.now()).total_seconds()) + 0.05)
    response = _bearer(raw_key).get("/api/v1/me/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.django_db(transaction=True)
def test_cached_key_authenticates_without_a_query(user, django_assert_num_queries):
    from accounts.authentication import api_key_resolve
    from accounts.services import api_key_create

    key, raw_key = api_key_create(user=user, name="k")
    assert api_key_resolve(raw_key).user.username == user.username  # loads and caches
    with django_assert_num_queries(0):
        cached = api_key_resolve(raw_key)
    assert (cached.pk, cached.user.pk, cached.user.plan_id) == (key.pk, user.pk, user.plan_id)
    assert cached.user.is_authenticated
    with django_assert_num_queries(1):  # the deferred password is read when asked for
        assert cached.user.check_password("pw") is False


@pytest.mark.django_db(transaction=True)
def test_writes_to_a_cached_key_or_its_user_take_effect_at_once(user):
    from accounts.services import api_key_create, api_key_revoke

    key, raw_key = api_key_create(user=user, name="k")
    client = _bearer(raw_key)
    assert client.get("/api/v1/me/").status_code == 200  # cached
    user.is_active = False
    user.save()
    assert client.get("/api/v1/me/").status_code == 401
    user.is_active = True
    user.save()
    assert client.get("/api/v1/me/").status_code == 200
    key.expires_at = timezone.now() - dt.timedelta(seconds=1)  # e.g. an edit in the admin
    key.save()
    assert client.get("/api/v1/me/").status_code == 401
    key.expires_at = None
    key.save()
    assert client.get("/api/v1/me/").status_code == 200
    api_key_revoke(user=user, key_id=key.pk)
    assert client.get("/api/v1/me/").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_saving_the_cached_user_keeps_the_password_and_last_used_is_written_once_a_minute(
    user, django_assert_num_queries
):
    from accounts.authentication import api_key_resolve
    from accounts.services import api_key_create

    user.set_password("secret-pw")
    user.save()
    _key, raw_key = api_key_create(user=user, name="k")
    client = _bearer(raw_key)
    assert client.get("/api/v1/me/").status_code == 200
    first_use = ApiKey.objects.get(user=user).last_used_at
    assert first_use is not None
    assert client.get("/api/v1/me/").status_code == 200
    assert ApiKey.objects.get(user=user).last_used_at == first_use  # not on every request

    cached = api_key_resolve(raw_key)
    cached.user.first_name = "Changed"
    cached.user.save()  # the deferred password is left alone
    user.refresh_from_db()
    assert user.first_name == "Changed"
    assert user.check_password("secret-pw")


def test_expiry_in_the_past_is_a_validation_error(session_client):
    past = (timezone.now() - dt.timedelta(days=1)).isoformat()
    response = session_client.post(
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


def test_cannot_see_or_revoke_another_users_key(session_client, other_user):
    from accounts.services import api_key_create

    key, _ = api_key_create(user=other_user, name="theirs")
    assert session_client.get("/api/v1/api-keys/").json()["count"] == 0
    response = session_client.delete(f"/api/v1/api-keys/{key.id}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_api_keys_require_authentication(api_client):
    response = api_client.post("/api/v1/api-keys/", {"name": "x"}, format="json")
    assert response.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_known_key_is_authenticated_from_its_cached_row_without_a_query(user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.services import api_key_create

    _key, raw_key = api_key_create(user=user, name="k")
    client = _bearer(raw_key)
    assert client.get("/api/v1/me/").status_code == 200  # the row is cached now
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/me/")
    assert response.status_code == 200 and response.json()["username"] == user.username
    assert "RateLimit" in response
    assert not [q for q in queries.captured_queries if "accounts_apikey" in q["sql"]]


@pytest.mark.django_db(transaction=True)
def test_revoking_a_key_whose_row_is_cached_and_freshly_used_refuses_it_at_once(user):
    from accounts.services import api_key_create, api_key_revoke

    key, raw_key = api_key_create(user=user, name="k")
    client = _bearer(raw_key)
    assert client.get("/api/v1/me/").status_code == 200  # last use written, row cached
    assert client.get("/api/v1/me/").status_code == 200  # answered from the cached row
    api_key_revoke(user=user, key_id=key.pk)
    response = client.get("/api/v1/me/")
    assert response.status_code == 401, response.content


def test_an_api_key_cannot_list_create_or_revoke_keys(session_client, user):
    own = session_client.post("/api/v1/api-keys/", {"name": "leaked"}, format="json").json()
    other = session_client.post("/api/v1/api-keys/", {"name": "other"}, format="json").json()
    client = _bearer(own["key"])
    assert client.get("/api/v1/me/").status_code == 200  # the key itself works

    refused = [
        client.get("/api/v1/api-keys/"),
        client.post("/api/v1/api-keys/", {"name": "permanent"}, format="json"),
        client.delete(f"/api/v1/api-keys/{other['id']}/"),
        client.delete(f"/api/v1/api-keys/{own['id']}/"),
    ]
    for response in refused:
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "permission_denied"
        assert "signed-in browser session" in error["message"]
    keys = ApiKey.objects.filter(user=user)
    assert sorted(keys.values_list("name", flat=True)) == ["leaked", "other"]
    assert not keys.filter(revoked_at__isnull=False).exists()

    # The browser session still manages keys.
    assert session_client.get("/api/v1/api-keys/").json()["count"] == 2
    assert session_client.post("/api/v1/api-keys/", {"name": "n"}, format="json").status_code == 201
    assert session_client.delete(f"/api/v1/api-keys/{other['id']}/").status_code == 204


def test_the_schema_says_keys_are_managed_from_a_browser_session(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    for path, method in [("/api/v1/api-keys/", "get"), ("/api/v1/api-keys/", "post"),
                         ("/api/v1/api-keys/{key_id}/", "delete")]:  # fmt: skip
        operation = paths[path][method]
        assert operation["security"] == [{"cookieAuth": []}], (path, method)
        assert "403" in operation["responses"], (path, method)
        assert "session" in operation["description"]
    # Elsewhere a key is as good as a session.
    assert {"apiKeyAuth": []} in paths["/api/v1/me/"]["get"]["security"]
