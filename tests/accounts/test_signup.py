"""Signup is limited per client IP; with ACCOUNT_EMAIL_VERIFICATION on, a new account stays
inactive until the signed, expiring link mailed to it is followed."""

import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from rest_framework.test import APIClient

from accounts.services import api_key_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SIGNUP = "/accounts/signup/"
RESEND = "/accounts/verify/resend/"
PASSWORD = "Sp4rk-pass-long!"


def _signup(client, username: str, email: str = "", **extra):
    data = {"username": username, "email": email, "password1": PASSWORD, "password2": PASSWORD}
    return client.post(SIGNUP, data, **extra)


def _user(username: str):
    return get_user_model().objects.get(username=username)


def _link(message) -> str:
    (path,) = re.findall(r"https?://[^/\s]+(/accounts/verify/[^\s]+/)", message.body)
    return path


def _login(client, username: str) -> bool:
    client.post("/accounts/login/", {"username": username, "password": PASSWORD})
    return "_auth_user_id" in client.session


def test_signup_is_limited_per_client_ip(client, settings):
    settings.SIGNUP_RATE_LIMIT = "3/h"
    for n in range(3):
        response = _signup(client, f"new{n}", REMOTE_ADDR="192.0.2.1")
        assert response.status_code == 302, response.content.decode()[:500]
        client.logout()
    response = _signup(client, "new3", REMOTE_ADDR="192.0.2.1")
    assert response.status_code == 429
    assert "Too many sign-ups" in response.content.decode()
    assert not get_user_model().objects.filter(username="new3").exists()
    # Another address is not affected.
    assert _signup(client, "new3", REMOTE_ADDR="192.0.2.2").status_code == 302
    assert get_user_model().objects.filter(username="new3").exists()


def test_without_verification_signup_logs_in_at_once_and_sends_nothing(client, settings):
    assert settings.ACCOUNT_EMAIL_VERIFICATION is False  # the local and test default
    assert _signup(client, "quick").status_code == 302
    assert _user("quick").is_active and "_auth_user_id" in client.session
    assert mail.outbox == []


@pytest.fixture
def verification(settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = True


def test_with_verification_an_email_is_required(client, verification):
    response = _signup(client, "carol")
    assert response.status_code == 200
    assert "field-error" in response.content.decode()
    assert not get_user_model().objects.filter(username="carol").exists()
    assert mail.outbox == []


def test_the_mailed_link_activates_the_account(client, verification):
    response = _signup(client, "carol", "carol@example.com")
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
    page = client.get(response["Location"]).content.decode()
    assert "carol@example.com" in page
    user = _user("carol")
    assert not user.is_active and user.email_verification.verified_at is None

    (message,) = mail.outbox
    assert message.to == ["carol@example.com"]
    link = _link(message)
    assert not _login(client, "carol")  # not before the link is followed

    confirm = client.get(link)  # a mail scanner's GET changes nothing
    assert confirm.status_code == 200 and 'method="post"' in confirm.content.decode()
    assert not _user("carol").is_active
    response = client.post(link)
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    user = _user("carol")
    assert user.is_active and user.email_verification.verified_at is not None
    assert "_auth_user_id" not in client.session  # the link itself never logs in
    assert _login(client, "carol")
    key = client.post("/api/v1/api-keys/", {"name": "k"}, content_type="application/json")
    assert key.status_code == 201


def test_a_used_link_cannot_reactivate_an_account_staff_deactivated(client, verification):
    _signup(client, "dave", "dave@example.com")
    link = _link(mail.outbox[0])
    client.post(link)
    user = _user("dave")
    user.is_active = False
    user.save()
    client.post(link)
    assert not _user("dave").is_active


def test_a_tampered_link_is_refused(client, verification):
    _signup(client, "erin", "erin@example.com")
    link = _link(mail.outbox[0])
    token = link.rstrip("/").rsplit("/", 1)[1]
    payload, rest = token.split(":", 1)

    def flipped(text: str, at: int) -> str:
        return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]

    for bad in (flipped(payload, len(payload) // 2) + ":" + rest, flipped(token, -1),
                "not-a-token"):  # fmt: skip
        response = client.post(f"/accounts/verify/{bad}/")
        assert response.status_code == 400, bad
        assert "invalid or has expired" in response.content.decode()
    assert not _user("erin").is_active


def test_an_expired_link_is_refused(client, verification, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION_MAX_AGE = 1
    _signup(client, "frank", "frank@example.com")
    link = _link(mail.outbox[0])
    time.sleep(1.1)
    response = client.post(link)
    assert response.status_code == 400
    assert "invalid or has expired" in response.content.decode()
    assert not _user("frank").is_active


def test_an_unverified_user_cannot_log_in_or_use_a_key(client, verification):
    _signup(client, "gina", "gina@example.com")
    user = _user("gina")
    assert not client.login(username="gina", password=PASSWORD)
    assert not _login(client, "gina")
    response = client.post("/api/v1/api-keys/", {"name": "k"}, content_type="application/json")
    assert response.status_code == 401
    # Even a key minted for the account (in the admin) does not authenticate it.
    _key, raw = api_key_create(user=user, name="from admin")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/me/").status_code == 401


def test_resend_mails_a_fresh_link_and_reveals_nothing(client, verification):
    _signup(client, "hank", "hank@example.com")
    UserFactory(username="ivy", email="ivy@example.com")  # active: nothing to verify
    mail.outbox.clear()
    answers = set()
    for email in ("HANK@example.com", "ivy@example.com", "nobody@example.com"):
        response = client.post(RESEND, {"email": email})
        assert response.status_code == 302
        answers.add(response["Location"])
    # The same answer whether or not an account awaits verification at the address.
    (location,) = answers
    assert "new link" in client.get(location).content.decode()
    (message,) = mail.outbox
    assert message.to == ["hank@example.com"]
    assert client.post(_link(message)).status_code == 302
    assert _user("hank").is_active


def test_resend_is_limited(client, verification, settings):
    settings.SIGNUP_RATE_LIMIT = "3/h"
    _signup(client, "jay", "jay@example.com", REMOTE_ADDR="192.0.2.5")
    mail.outbox.clear()
    # Per address (the signup spent one): an inbox cannot be flooded from many networks.
    for n in range(2):
        response = client.post(
            RESEND, {"email": "jay@example.com"}, REMOTE_ADDR=f"192.0.2.{n + 10}"
        )
        assert response.status_code == 302
    response = client.post(RESEND, {"email": "jay@example.com"}, REMOTE_ADDR="192.0.2.20")
    assert response.status_code == 429
    assert len(mail.outbox) == 2


def test_verification_pages_are_translated(client, verification):
    page = client.get(RESEND, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "重新发送" in page


def test_staff_see_a_pending_verification_in_the_admin(client, verification, staff_user):
    _signup(client, "kim", "kim@example.com")
    client.force_login(staff_user)
    page = client.get(f"/admin/accounts/user/{_user('kim').pk}/change/")
    assert page.status_code == 200
    assert "Pending: link mailed to kim@example.com" in page.content.decode()
