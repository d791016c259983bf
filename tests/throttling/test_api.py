"""The limiter through the API (Django test client, real Redis): exact counts, headers,
layers, admin changes, lists, quota, websocket frames and monitoring."""

import math
import re
import time

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.services import api_key_create
from tests.factories import UserFactory, plan
from throttling.models import AccessListEntry, Alert, ExtraRule, LayerPolicy
from throttling.quota import Reservation, tokens_reserve, tokens_settle
from throttling.services import limiter_check_websocket

pytestmark = pytest.mark.django_db


def _policy(layer: str, **fields) -> None:
    policy = LayerPolicy.objects.get(layer=layer)
    for name, value in fields.items():
        setattr(policy, name, value)
    policy.save()  # the save signal refreshes the limiter's configuration


def _assert_headers_consistent(response) -> None:
    limit = int(response["X-RateLimit-Limit"])
    remaining = int(response["X-RateLimit-Remaining"])
    reset = int(response["X-RateLimit-Reset"])
    layer = re.match(r'"([^"]+)";q=(\d+);w=(\d+)$', response["RateLimit-Policy"])
    assert layer and int(layer.group(2)) == limit and layer.group(3) == "60"
    assert response["RateLimit"] == f'"{layer.group(1)}";r={remaining};t={reset}'
    assert 0 <= remaining <= limit


def test_free_user_blasting_150_requests_gets_100(auth_client):
    started = time.monotonic()
    responses = [auth_client.get("/api/v1/me/") for _ in range(150)]
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    admitted = statuses.count(200)
    # docs/throttling.md: a token bucket admits at most limit + limit * t / 60 in t seconds.
    assert 100 <= admitted <= 100 + int(100 * elapsed / 60) + 1
    assert statuses.count(429) == 150 - admitted
    assert set(statuses) == {200, 429}
    first = responses[0]
    assert first["RateLimit-Policy"] == '"plan";q=100;w=60'
    assert first["X-RateLimit-Remaining"] == "99"
    for response in responses:
        _assert_headers_consistent(response)
    refused = [r for r in responses if r.status_code == 429]
    for response in refused:
        assert response["X-RateLimit-Remaining"] == "0"
        assert int(response["Retry-After"]) >= 1
        error = response.json()["error"]
        assert error["code"] == "rate_limited"
        assert error["details"]["layer"] == "plan"
        assert error["details"]["limit"] == 100
    # Remaining counts down with the admitted requests (refills may give a token back).
    refill = int(100 * elapsed / 60) + 1
    admitted_remaining = [
        int(r["X-RateLimit-Remaining"]) for r in responses if r.status_code == 200
    ]
    for count, remaining in enumerate(admitted_remaining, start=1):
        assert 100 - count <= remaining <= 100 - count + refill


def test_plan_change_in_the_admin_takes_effect(user):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = APIClient()
    client.force_authenticate(user)
    # Until refused: exactly the documented token-bucket bound for the span taken (on a
    # loaded machine 100 requests can take longer than one token's refill, 0.6 s).
    started = time.monotonic()
    admitted = 0
    while client.get("/api/v1/me/").status_code == 200:
        admitted += 1
        assert admitted <= 200
    refused_at = time.monotonic()
    assert 100 <= admitted <= 100 + int(100 * (refused_at - started) / 60) + 1

    admin = Client()
    admin.force_login(staff)
    response = admin.post(
        f"/admin/accounts/user/{user.pk}/change/",
        {
            "username": user.username,
            "email": user.email,
            "is_active": "on",
            "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
            "plan": plan("pro").pk,
        },
    )
    assert response.status_code == 302, response.content[:2000]
    user.refresh_from_db()
    client.force_authenticate(user)
    response = client.get("/api/v1/me/")
    # The used part of the bucket carries over; the pro limit applies at once.
    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == "500"
    # Refused means more than 99 of the bucket was used; this request takes one more, and
    # what refilled since the refusal comes back, at the new limit's rate (500/min).
    refill = int(500 * (time.monotonic() - refused_at) / 60) + 1
    assert 399 <= int(response["X-RateLimit-Remaining"]) <= 400 + refill


def test_plan_limit_edited_in_the_admin_takes_effect(auth_client, staff_user):
    _policy("plan", algorithm="sliding_window")  # exact counts, however slow the machine
    assert auth_client.get("/api/v1/me/")["X-RateLimit-Limit"] == "100"
    free = plan("free")
    admin = Client()
    admin.force_login(staff_user)
    response = admin.post(
        f"/admin/throttling/plan/{free.pk}/change/",
        {
            "tier": "free", "name": free.name, "is_default": "on",
            "requests_per_minute": 7, "conversations_per_minute": 60,
            "messages_per_minute": 120, "knowledge_per_minute": 30, "polling_per_minute": 60,
            "monthly_token_quota": free.monthly_token_quota,
            "storage_quota_bytes": free.storage_quota_bytes,
            "document_quota": free.document_quota,
            "knowledge_base_quota": free.knowledge_base_quota,
        },
    )  # fmt: skip
    assert response.status_code == 302
    statuses = [auth_client.get("/api/v1/me/").status_code for _ in range(8)]
    assert statuses == [200] * 6 + [429, 429]  # 1 + 6 = 7 admitted


def test_endpoint_group_limits(auth_client, test_urls):
    # The exact sliding window: never more than 30 in any 60 s, however slow the machine.
    _policy("endpoint", algorithm="sliding_window")
    started = time.monotonic()
    statuses = [auth_client.get("/api/v1/knowledge/_t/").status_code for _ in range(32)]
    assert statuses == [200] * 30 + [429, 429]
    refused = auth_client.get("/api/v1/knowledge/_t/")
    assert refused.json()["error"]["details"]["layer"] == "endpoint:knowledge"
    assert refused["RateLimit-Policy"] == '"endpoint:knowledge";q=30;w=60'
    # Other groups have their own budgets.
    ok = auth_client.post("/api/v1/conversations/_t/")
    assert ok.status_code == 201
    assert ok["RateLimit-Policy"] == '"endpoint:conversations";q=60;w=60'
    # All-or-nothing: the refused knowledge requests cost the plan layer nothing.
    usage = auth_client.get("/api/v1/me/").json()["usage"]
    # 30 + 1 conversation + this call, less what the plan's token bucket (free: 100/min)
    # refilled meanwhile: a slow machine takes more than the 0.6 s one token needs.
    refilled = int((time.monotonic() - started) * 100 / 60)
    assert 32 - refilled <= usage["plan"]["used"] <= 33
    assert usage["endpoint:messages"]["used"] == 0


def test_ip_layer_for_anonymous_and_failed_auth_traffic(api_client):
    _policy("ip", limit=20, algorithm="sliding_window")
    bad_key = {"HTTP_AUTHORIZATION": "Bearer osk_not-a-real-key"}
    statuses = [api_client.get("/api/v1/me/").status_code for _ in range(10)]
    statuses += [api_client.get("/api/v1/me/", **bad_key).status_code for _ in range(10)]
    statuses += [api_client.get("/api/v1/nope/").status_code for _ in range(2)]
    assert statuses == [401] * 20 + [429, 429]
    refused = api_client.get("/api/v1/me/")
    assert refused.json()["error"]["details"]["layer"] == "ip"
    # Another address has its own budget; a forged X-Forwarded-For is ignored by default.
    assert api_client.get("/api/v1/me/", REMOTE_ADDR="10.9.8.7").status_code == 401
    spoofed = api_client.get("/api/v1/me/", HTTP_X_FORWARDED_FOR="10.9.8.6")
    assert spoofed.status_code == 429


def test_client_ip_behind_trusted_proxies(api_client, settings):
    _policy("ip", limit=2)
    settings.THROTTLE_TRUSTED_PROXIES = ["127.0.0.0/8"]  # the test client's peer is the proxy
    # The proxy appended the real client (last entry); the first entry is the client's forgery.
    for forged in ("1.1.1.1", "2.2.2.2"):
        api_client.get("/api/v1/me/", HTTP_X_FORWARDED_FOR=f"{forged}, 203.0.113.5")
    refused = api_client.get("/api/v1/me/", HTTP_X_FORWARDED_FOR="3.3.3.3, 203.0.113.5")
    assert refused.status_code == 429
    other = api_client.get("/api/v1/me/", HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.6")
    assert other.status_code == 401


def test_forwarded_for_is_trusted_only_from_proxy_networks(api_client, settings):
    """Security issue item 6: X-Forwarded-For names the client only when the peer is one of
    the configured proxies. A leftover proxy count (the old setting) must not reopen the
    hole: a client talking to the app directly cannot pick its own address."""
    _policy("ip", limit=2)
    settings.THROTTLE_TRUSTED_PROXY_COUNT = 1
    settings.THROTTLE_TRUSTED_PROXIES = ["10.0.0.0/8"]
    direct = "198.51.100.7"
    statuses = [
        api_client.get(
            "/api/v1/me/", REMOTE_ADDR=direct, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}"
        ).status_code
        for n in range(4)
    ]
    assert statuses == [401, 401, 429, 429]  # one budget: the peer's, whatever it claims
    # Through a proxy (and a second one behind it) the first untrusted hop is the client.
    via_proxy = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.5"}
    assert [api_client.get("/api/v1/me/", **via_proxy).status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]
    other = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "forged, 203.0.113.10"}
    assert api_client.get("/api/v1/me/", **other).status_code == 401  # its own budget
    # The proxies' own addresses were never charged.
    assert api_client.get("/api/v1/me/", REMOTE_ADDR="10.0.0.2").status_code == 401


def test_deny_list_user_and_cidr(auth_client, user, api_client):
    AccessListEntry.objects.create(kind="deny", user=user)
    response = auth_client.get("/api/v1/me/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "blocked"
    AccessListEntry.objects.create(kind="deny", network="10.0.0.0/8")
    blocked = api_client.get("/api/v1/me/", REMOTE_ADDR="10.20.30.40")
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "blocked"
    assert api_client.get("/api/v1/me/", REMOTE_ADDR="11.0.0.1").status_code == 401


def test_allow_list_skips_every_layer_but_global(auth_client, user, api_client):
    _policy("global", limit=150, algorithm="sliding_window")
    AccessListEntry.objects.create(kind="allow", user=user)
    statuses = [auth_client.get("/api/v1/me/").status_code for _ in range(120)]
    assert statuses == [200] * 120  # beyond the free plan's 100
    assert auth_client.get("/api/v1/me/")["RateLimit-Policy"] == '"global";q=150;w=60'
    AccessListEntry.objects.create(kind="allow", network="2001:db8::/32")
    _policy("ip", limit=1)
    ipv6 = [api_client.get("/api/v1/me/", REMOTE_ADDR="2001:db8::1").status_code for _ in range(3)]
    assert ipv6 == [401, 401, 401]  # allow-listed range: the IP layer does not apply
    assert [api_client.get("/api/v1/me/", REMOTE_ADDR="2001:db9::1").status_code
            for _ in range(2)] == [401, 429]  # fmt: skip
    statuses = [auth_client.get("/api/v1/me/").status_code for _ in range(40)]
    assert 429 in statuses  # the global layer still applies
    assert auth_client.get("/api/v1/me/").json()["error"]["details"]["layer"] == "global"


def test_websocket_frames_share_the_messages_budget(user, test_urls):
    enterprise = plan("enterprise")
    enterprise.messages_per_minute = 120  # under the plan's 2,000/min: the binding layer
    enterprise.save()
    user.plan = enterprise
    user.save()
    client = APIClient()
    client.force_authenticate(user)
    started = time.monotonic()
    scope = {"user": user, "client": ("127.0.0.1", 5000), "headers": []}
    frames = [limiter_check_websocket(scope=scope, user=user) for _ in range(60)]
    assert all(d.allowed for d in frames)
    posted = 0
    while client.post("/api/v1/messages/_t/").status_code == 201:
        posted += 1
    # 120 per minute shared with the frames (2 per second refill during the test).
    assert 60 <= posted <= 60 + int(120 * (time.monotonic() - started) / 60) + 1
    refused = limiter_check_websocket(scope=scope, user=user)
    assert not refused.allowed
    assert refused.layer == "endpoint:messages"
    assert 0 < refused.retry_after <= 1


def test_extra_rule_and_shadow_mode(auth_client, test_urls):
    ExtraRule.objects.create(name="kb-burst", path_prefix="/api/v1/knowledge/", limit=3)
    statuses = [auth_client.get("/api/v1/knowledge/_t/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    _policy("plan", shadow=True)
    plan_free = plan("free")
    plan_free.requests_per_minute = 5
    plan_free.save()
    statuses = [auth_client.get("/api/v1/me/").status_code for _ in range(10)]
    assert statuses == [200] * 10  # counted, not refused


def test_unthrottled_view_is_not_limited(auth_client, test_urls):
    response = auth_client.get("/api/v1/_t/unthrottled/")
    assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response


def test_quota_exhaustion(auth_client, user, test_urls):
    quota = plan("free").monthly_token_quota
    tokens_settle(user_id=user.id, prompt_tokens=quota - 1, completion_tokens=0)
    assert auth_client.post("/api/v1/_t/quota/").status_code == 201  # the last token, reserved

    # Held by something in progress: worth retrying soon.
    response = auth_client.post("/api/v1/_t/quota/")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert (error["details"]["used"], error["details"]["reserved"]) == (quota - 1, 1)
    assert response["Retry-After"] == "10" == str(error["details"]["retry_after"])

    # Used up: back at the first of next month.
    tokens_settle(user_id=user.id, reserved=1, prompt_tokens=0, completion_tokens=1)
    response = auth_client.post("/api/v1/_t/quota/")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["details"]["resets_at"].endswith("-01T00:00:00+00:00")
    assert int(response["Retry-After"]) > 10
    tokens = auth_client.get("/api/v1/me/").json()["tokens"]
    assert (tokens["used_this_month"], tokens["reserved"], tokens["remaining"]) == (quota, 0, 0)
    assert tokens["resets_at"] == error["details"]["resets_at"].replace("+00:00", "Z")


def test_unlimited_quota_never_refuses(user):
    enterprise = plan("enterprise")
    enterprise.monthly_token_quota = 0
    enterprise.save()
    user.plan = enterprise
    user.save()
    tokens_settle(user_id=user.id, prompt_tokens=10**9, completion_tokens=0)
    assert tokens_reserve(user=user, tokens=10**6) == Reservation(tokens=0, month=None)


def test_me_and_status_show_usage_per_layer(auth_client):
    started = time.monotonic()
    for _ in range(4):
        auth_client.get("/api/v1/me/")
    usage = auth_client.get("/api/v1/me/").json()["usage"]
    # The plan's token bucket refills 100/60 per second: a slow run sees some of it back.
    refilled = math.ceil((time.monotonic() - started) * 100 / 60)
    assert usage["plan"]["limit"] == 100 and 5 - refilled <= usage["plan"]["used"] <= 5
    assert usage["endpoint:knowledge"] == {"limit": 30, "used": 0, "remaining": 30, "reset": 0.0}
    status = auth_client.get("/api/v1/rate-limit/status/").json()
    refilled = math.ceil((time.monotonic() - started) * 100 / 60)
    layers = {layer["layer"]: layer for layer in status["layers"]}
    assert set(layers) >= {"global", "plan", "endpoint:conversations", "endpoint:messages"}
    assert 94 <= layers["plan"]["remaining"] <= 94 + refilled
    assert status["authenticated"] and not status["blocked"]


def test_stats_are_staff_only_and_count_per_layer(auth_client, user, staff_user):
    _policy("plan", algorithm="sliding_window")
    assert auth_client.get("/api/v1/rate-limit/stats/").status_code == 403
    for _ in range(103):
        auth_client.get("/api/v1/me/")
    staff = APIClient()
    staff.force_authenticate(staff_user)
    stats = staff.get("/api/v1/rate-limit/stats/?minutes=5").json()
    plan_totals = stats["totals"]["plan"]
    assert plan_totals["denied"] == 4  # 1 + 103 requests, 100 admitted
    assert plan_totals["allowed"] == 101  # and the staff request reading the stats
    assert plan_totals["near_limit"] >= 9  # the last 10% of the budget
    assert stats["top_limited_users"][0] == {
        "user_id": user.id, "username": user.username, "denied": plan_totals["denied"]
    }  # fmt: skip
    assert stats["latency_us"]["count"] >= 100
    assert 0 < stats["latency_us"]["p50"] <= stats["latency_us"]["p99"]
    assert staff.get("/api/v1/rate-limit/stats/?minutes=0").status_code == 400


def test_api_key_identity_uses_the_users_plan(user):
    user.plan = plan("enterprise")
    user.save()
    _key, raw = api_key_create(user=user, name="ci")
    client = APIClient()
    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    assert response["RateLimit-Policy"] == '"plan";q=2000;w=60'


def test_alerts_for_deny_spike_and_global_near_limit(auth_client, staff_user, settings):
    settings.THROTTLE_ALERT_DENY_MIN = 5
    # Exact counts on the global layer, however slow the machine (a token bucket of 12/min
    # would give a token back every 5 s between the two halves of the test).
    _policy("global", limit=1000, algorithm="sliding_window")
    plan_free = plan("free")
    plan_free.requests_per_minute = 10
    plan_free.save()
    statuses = [auth_client.get("/api/v1/me/").status_code for _ in range(30)]
    assert statuses.count(429) >= 19
    spike = Alert.objects.get(kind=Alert.Kind.DENY_SPIKE)
    assert spike.count == 1  # de-duplicated
    assert not Alert.objects.filter(kind=Alert.Kind.GLOBAL_NEAR_LIMIT).exists()

    _policy("global", limit=12)  # 10 already used of a smaller global budget
    auth_client.force_authenticate(staff_user)
    auth_client.get("/api/v1/me/")
    assert Alert.objects.filter(kind=Alert.Kind.GLOBAL_NEAR_LIMIT).count() == 1
    admin = Client()
    admin.force_login(staff_user)
    html = admin.get("/admin/throttling/alert/").content.decode()
    assert "Deny-rate spike" in html and "Global layer near its limit" in html


def test_admin_pages_and_list_entry_validation(staff_user, user):
    admin = Client()
    admin.force_login(staff_user)
    for model in ("plan", "layerpolicy", "extrarule", "accesslistentry", "alert"):
        assert admin.get(f"/admin/throttling/{model}/").status_code == 200
    bad = admin.post(
        "/admin/throttling/accesslistentry/add/", {"kind": "deny", "network": "10.0.0.300/8"}
    )
    assert bad.status_code == 200 and "Not an IP address or CIDR range" in bad.content.decode()
    both = admin.post(
        "/admin/throttling/accesslistentry/add/",
        {"kind": "deny", "network": "10.0.0.0/8", "user": user.pk},
    )
    assert "Name either a user or an IP address/CIDR range" in both.content.decode()
    ok = admin.post(
        "/admin/throttling/accesslistentry/add/", {"kind": "deny", "network": "10.1.2.3/8"}
    )
    assert ok.status_code == 302
    assert AccessListEntry.objects.get().network == "10.0.0.0/8"
