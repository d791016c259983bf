"""One identity per request: whatever way the `Authorization` header is written, the limiter
limits exactly the caller that authentication let in (security issue, item 2: the limiter once
read the key only after "Bearer " with one space, while DRF splits on any whitespace, so a
deny-listed user kept full access with `Bearer<TAB><key>` and plan limits became IP budgets).

Through the real ASGI server, so the header reaches Django exactly as a client wrote it
(repeated headers included)."""

import http.client
import json
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from accounts.services import api_key_create
from tests.factories import UserFactory
from throttling.models import AccessListEntry

# Every way DRF's `get_authorization_header(request).split()` accepts the scheme and key.
SCHEME_VARIANTS = [
    "Bearer {key}",
    "bearer {key}",
    "BEARER {key}",
    "BeArEr {key}",
    "Bearer\t{key}",
    "Bearer  {key}",
    "Bearer \t {key}",
    "Bearer {key} ",
    "Bearer {key}\t",
    " Bearer {key}",
]


# Whitespace an HTTP/1.1 parser refuses on the wire (uvicorn answers 400) but a server in
# front of Django might pass on: checked in-process.
IN_PROCESS_VARIANTS = [*SCHEME_VARIANTS, "Bearer\x0b{key}", "Bearer\x0c{key}", "Bearer\r{key}"]


def _get(server_url: str, headers: list[tuple[str, str]], path: str = "/api/v1/me/"):
    """A GET with the headers exactly as given (http.client sends whitespace and repeated
    headers as they are; httpx refuses some of them)."""
    url = urlsplit(server_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        return SimpleNamespace(
            status_code=response.status,
            headers=response.headers,
            text=body.decode(errors="replace"),
            json=lambda: json.loads(body),
        )
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_deny_listed_user_is_blocked_whatever_the_header_spelling(asgi_server, live_limiter_keys):
    user = UserFactory()
    _key, raw = api_key_create(user=user, name="denied")
    AccessListEntry.objects.create(kind="deny", user=user, note="abuse")
    time.sleep(settings.THROTTLE_CONFIG_TTL + 0.5)  # the server's limiter snapshot refreshes
    for variant in SCHEME_VARIANTS:
        response = _get(asgi_server.url, [("Authorization", variant.format(key=raw))])
        assert response.status_code == 403, (variant, response.status_code, response.text)
        assert response.json()["error"]["code"] == "blocked", variant


@pytest.mark.django_db(transaction=True)
def test_plan_limits_apply_to_the_user_whatever_the_header_spelling(asgi_server, live_limiter_keys):
    """The free plan's 100/min is the user's, spent by every spelling together (not a fresh
    per-IP budget of 200 for the unusual ones)."""
    user = UserFactory()
    _key, raw = api_key_create(user=user, name="spender")
    statuses = []
    started = time.monotonic()
    for n in range(130):
        variant = SCHEME_VARIANTS[n % len(SCHEME_VARIANTS)]
        response = _get(asgi_server.url, [("Authorization", variant.format(key=raw))])
        statuses.append(response.status_code)
        if response.status_code == 200:
            assert response.headers["RateLimit-Policy"].startswith('"plan";q=100'), variant
    elapsed = time.monotonic() - started
    admitted = statuses.count(200)
    assert 100 <= admitted <= 100 + int(100 * elapsed / 60) + 1, statuses
    assert set(statuses) == {200, 429}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("Authorization", "Bearer")], id="scheme-only"),
        pytest.param([("Authorization", "Bearer ")], id="empty-key"),
        pytest.param([("Authorization", "Bearer \t ")], id="blank-key"),
        pytest.param([("Authorization", "Bearer {key} extra")], id="three-parts"),
        pytest.param(
            [("Authorization", "Bearer {key}"), ("Authorization", "Bearer {key}")],
            id="repeated-header",
        ),
        pytest.param(
            [("Authorization", "Bearer {key}"), ("Authorization", "Bearer osk_other")],
            id="repeated-different",
        ),
    ],
)
def test_malformed_credentials_are_refused_and_limited_per_ip(
    asgi_server, live_limiter_keys, headers
):
    """Nobody is authenticated by a malformed header, so it is limited as anonymous traffic
    (the IP layer), never as the key's owner and never as nobody at all."""
    user = UserFactory()
    _key, raw = api_key_create(user=user, name="malformed")
    sent = [(name, value.format(key=raw)) for name, value in headers]
    response = _get(asgi_server.url, sent)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] in {"not_authenticated", "authentication_failed"}
    assert response.headers["RateLimit-Policy"] == '"ip";q=200;w=60'


@pytest.mark.django_db
def test_every_spelling_authenticated_is_limited_as_its_user_in_process(settings):
    from rest_framework.test import APIClient

    user = UserFactory()
    _key, raw = api_key_create(user=user, name="in-process")
    AccessListEntry.objects.create(kind="deny", user=user, note="abuse")
    client = APIClient()
    for variant in IN_PROCESS_VARIANTS:
        response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=variant.format(key=raw))
        assert response.status_code == 403, (variant, response.status_code)
        assert response.json()["error"]["code"] == "blocked", variant
