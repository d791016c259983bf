"""Through the real ASGI server (uvicorn subprocess on the test database): an API-key client
blasting past its plan limit, and the headers on the wire."""

import time

import httpx
import pytest

from accounts.services import api_key_create
from tests.factories import UserFactory


@pytest.mark.django_db(transaction=True)
def test_api_key_blast_through_the_asgi_server(asgi_server, live_limiter_keys):
    user = UserFactory()
    _key, raw = api_key_create(user=user, name="blast")
    headers = {"Authorization": f"Bearer {raw}"}
    with httpx.Client(base_url=asgi_server.url, headers=headers, timeout=10) as client:
        started = time.monotonic()
        responses = [client.get("/api/v1/me/") for _ in range(150)]
        elapsed = time.monotonic() - started
        statuses = [r.status_code for r in responses]
        admitted = statuses.count(200)
        assert 100 <= admitted <= 100 + int(100 * elapsed / 60) + 1
        assert set(statuses) == {200, 429}
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["RateLimit-Policy"] == '"plan";q=100;w=60'
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["details"]["layer"] == "plan"
        # Failed auth from the same address counts against that address, not the user.
        bad = client.get("/api/v1/me/", headers={"Authorization": "Bearer osk_wrong"})
        assert bad.status_code == 401
        assert bad.headers["RateLimit-Policy"] == '"ip";q=200;w=60'
    assert "Traceback" not in asgi_server.log()
