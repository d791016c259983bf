"""Login brute force is limited per username and per client IP, on the product's login page and
the admin's, through the project's one limiter; with Redis down it follows
LOGIN_THROTTLE_FAIL_MODE. Test settings: LOGIN_RATE_LIMIT = 5/m."""

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from openspark.core.state import process_state_reset
from openspark.embedded import start_redis
from tests.conftest import PASSWORD
from tests.factories import UserFactory
from throttling.identity import client_ip

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def _attempt(client: Client, username: str, password: str = "wrong", *, path=LOGIN, **extra):
    return client.post(path, {"username": username, "password": password}, **extra)


def test_usernames_differing_by_spaces_width_or_case_share_one_bucket(client):
    user = UserFactory(username="alice")
    # Five attempts from five addresses, so only the username's bucket can fill up.
    full_width = "\uff41\uff4c\uff49\uff43\uff45"  # "alice" in full-width letters (CJK IMEs)
    variants = ["alice", " alice", "alice\t", full_width, "ALICE"]
    for n, variant in enumerate(variants, start=1):
        response = _attempt(client, variant, REMOTE_ADDR=f"10.0.0.{n}")
        assert response.status_code == 200, variant
    response = _attempt(client, user.username, PASSWORD, REMOTE_ADDR="10.0.0.99")
    assert response.status_code == 429
    assert "Too many login attempts" in response.content.decode()
    assert not _logged_in(client)
    # Another username from that address is not affected.
    other = UserFactory(username="bob")
    response = _attempt(client, other.username, PASSWORD, REMOTE_ADDR="10.0.0.99")
    assert response.status_code == 302 and _logged_in(client)


def test_admin_login_is_limited_in_the_same_buckets_as_the_login_page(client, staff_user):
    for path in (LOGIN, LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN):
        assert _attempt(client, staff_user.username, path=path).status_code == 200
    response = _attempt(client, staff_user.username, PASSWORD, path=ADMIN_LOGIN)
    assert response.status_code == 429
    assert "Too many login attempts" in response.content.decode()
    assert response["Retry-After"].isdigit()
    assert not _logged_in(client)


def test_admin_login_still_logs_staff_in(client, staff_user):
    response = _attempt(client, staff_user.username, PASSWORD, path=ADMIN_LOGIN)
    assert response.status_code == 302 and _logged_in(client)
    assert client.get("/admin/").status_code == 200


def test_behind_a_trusted_proxy_each_client_address_has_its_own_bucket(client, settings):
    settings.THROTTLE_TRUSTED_PROXIES = ["127.0.0.0/8", "::1/128"]  # the test client's peer
    first, second = "203.0.113.7", "198.51.100.9"
    factory = RequestFactory()
    assert {client_ip(factory.post(LOGIN, HTTP_X_FORWARDED_FOR=ip)) for ip in (first, second)} == {
        first,
        second,
    }

    # Different usernames, so only the address's bucket can fill up.
    for n in range(5):
        response = _attempt(client, f"nobody{n}", HTTP_X_FORWARDED_FOR=first)
        assert response.status_code == 200
    assert _attempt(client, "nobody9", HTTP_X_FORWARDED_FOR=first).status_code == 429

    user = UserFactory()
    response = _attempt(client, user.username, PASSWORD, HTTP_X_FORWARDED_FOR=second)
    assert response.status_code == 302 and _logged_in(client)


@pytest.fixture
def redis_stopped(settings, tmp_path):
    """The limiter and the cache on a Redis of this test's own, then stopped."""
    service = start_redis(tmp_path / "redis", persist=False)
    settings.REDIS_URL = service.url
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": service.url}}
    settings.THROTTLE_REDIS_RETRY_SECONDS = 0.2
    settings.CACHE_REDIS_RETRY_SECONDS = 0.2
    service.stop()
    yield
    process_state_reset()  # this process's memory of the outage must not outlive the test


def test_with_redis_down_logins_fail_open_by_default_and_stay_limited(
    client, user, settings, redis_stopped
):
    response = _attempt(client, user.username, PASSWORD)
    assert response.status_code == 302 and _logged_in(client)
    assert settings.LOGIN_THROTTLE_FAIL_MODE == "open"
    client.logout()
    # This process's fallback bucket still counts: five attempts in all, then refused.
    for _ in range(4):
        assert _attempt(client, user.username).status_code == 200
    response = _attempt(client, user.username, PASSWORD)
    assert response.status_code == 429
    assert not _logged_in(client)


def test_with_redis_down_logins_fail_closed_when_configured(client, user, settings, redis_stopped):
    settings.LOGIN_THROTTLE_FAIL_MODE = "closed"
    for path in (LOGIN, ADMIN_LOGIN):
        response = _attempt(client, user.username, PASSWORD, path=path)
        assert response.status_code == 503
        assert "temporarily unavailable" in response.content.decode()
        assert response["Retry-After"].isdigit()
        assert not _logged_in(client)


def test_refusals_are_readable_in_chinese(client, user, settings):
    settings.LANGUAGE_CODE = "zh-hans"
    for _ in range(5):
        _attempt(client, user.username, HTTP_ACCEPT_LANGUAGE="zh-hans")
    response = _attempt(client, user.username, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 429
    assert "登录尝试次数过多" in response.content.decode()
    assert reverse("accounts:login") in response.content.decode()


@pytest.mark.parametrize(("rate", "limit", "period"), [("2/min", 2, 60), ("2/5m", 2, 300)])
def test_rate_settings_read_as_before(client, user, settings, rate, limit, period):
    settings.LOGIN_RATE_LIMIT = rate
    for _ in range(limit):
        assert _attempt(client, user.username).status_code == 200
    response = _attempt(client, user.username)
    assert response.status_code == 429
    # A token bucket: the next attempt is back after period / limit seconds.
    assert abs(int(response["Retry-After"]) - period / limit) <= 1
