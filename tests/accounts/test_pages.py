import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_signup_creates_free_user_and_logs_in(client):
    response = client.post(
        reverse("accounts:signup"),
        {
            "username": "alice",
            "email": "a@example.com",
            "password1": "Sp4rk-pass!",
            "password2": "Sp4rk-pass!",
        },
    )
    assert response.status_code == 302
    user = get_user_model().objects.get(username="alice")
    assert user.check_password("Sp4rk-pass!")
    home = client.get(reverse("home"))
    assert home.status_code == 200
    assert 'data-plan-tier="free"' in home.content.decode()


def test_signup_rejects_mismatched_passwords(client):
    response = client.post(
        reverse("accounts:signup"),
        {"username": "bob", "password1": "Sp4rk-pass!", "password2": "other-pass!"},
    )
    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="bob").exists()
    assert "field-error" in response.content.decode()


def test_login_then_home_shows_plan(client, user):
    response = client.post(
        reverse("accounts:login"), {"username": user.username, "password": PASSWORD}
    )
    assert response.status_code == 302
    page = client.get(reverse("home")).content.decode()
    assert user.username in page
    assert 'data-plan-tier="free"' in page


def test_home_requires_login(client):
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert reverse("accounts:login") in response["Location"]


def test_wrong_password_is_a_form_error(client, user):
    response = client.post(
        reverse("accounts:login"), {"username": user.username, "password": "nope"}
    )
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_login_brute_force_is_limited_with_a_clear_message(client, user, settings):
    # Test settings allow 5 login POSTs per minute per IP and per username.
    for _ in range(5):
        client.post(reverse("accounts:login"), {"username": user.username, "password": "bad"})
    response = client.post(
        reverse("accounts:login"), {"username": user.username, "password": PASSWORD}
    )
    assert response.status_code == 429
    assert "Too many login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_logout_requires_post_and_logs_out(client, user):
    client.force_login(user)
    assert client.get(reverse("accounts:logout")).status_code == 405
    response = client.post(reverse("accounts:logout"))
    assert response.status_code == 302
    assert client.get(reverse("home")).status_code == 302


def test_default_language_is_chinese_and_switch_to_english(client, settings):
    settings.LANGUAGE_CODE = "zh-hans"  # the product default (tests run in English)
    page = client.get(reverse("accounts:login"), HTTP_ACCEPT_LANGUAGE="")
    assert "登录" in page.content.decode()
    client.post(reverse("set_language"), {"language": "en", "next": "/accounts/login/"})
    page = client.get(reverse("accounts:login"))
    assert "Log in" in page.content.decode()
    assert "登录" not in page.content.decode()
