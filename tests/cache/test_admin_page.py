"""The admin's cache page: linked from the index, staff only, stats and purge."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def test_index_links_to_the_cache_page(admin_client_):
    assert 'href="/admin/cache/"' in admin_client_.get("/admin/").content.decode()


def test_page_shows_stats_per_namespace(admin_client_, auth_client):
    auth_client.get("/api/v1/me/")
    auth_client.get("/api/v1/me/")
    page = admin_client_.get("/admin/cache/")
    assert page.status_code == 200
    html = page.content.decode()
    for namespace in ("user_profile", "conversation_history", "ai_response", "rate_limit"):
        assert f"<td>{namespace}</td>" in html
    assert "<td>user_profile</td><td>3600</td><td>1</td><td>1</td>" in html
    assert "Memory used" in html


def test_page_is_staff_only(user):
    client = Client()
    client.force_login(user)
    response = client.get("/admin/cache/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_purge_button(admin_client_, user):
    reader = APIClient()
    reader.force_authenticate(user)
    reader.get("/api/v1/me/")
    response = admin_client_.post("/admin/cache/", {"purge": "user_profile"}, follow=True)
    assert "Purged user_profile (1 key deleted)." in response.content.decode()
