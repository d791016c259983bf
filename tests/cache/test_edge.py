"""The edge (openspark/edge.py) through the real ASGI server: kept responses replayed ahead of
Django, invalidated by the same writes as the cached reads they were built from, with the
limiter and authentication exactly as strict as on Django's path."""

import datetime as dt
import time

import httpx
import pytest
from django.conf import settings
from django.utils import timezone
from django_redis import get_redis_connection

from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke
from conversations.models import Conversation
from conversations.services import conversation_update
from openspark.core.cache import stats_get
from tests.cache.conftest import entries_kept, ns_stats, unlimited, wait_for
from tests.factories import UserFactory
from throttling.models import Plan
from throttling.quota import tokens_settle

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIST = "/api/v1/conversations/"


def _client(server, raw_key: str, **headers) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {raw_key}", **headers}, timeout=10
    )


def _drop_cached_reads(namespace: str) -> int:
    """Delete the view's own cached values (not the kept responses): a request that reaches
    the view now reads the database."""
    client = get_redis_connection("default")
    keys = list(client.scan_iter(f"*:c:{namespace}:*", count=1000))
    return client.delete(*keys) if keys else 0


def _kept(client: httpx.Client, path: str, **kwargs) -> httpx.Response:
    """Request until the response is kept: the server learns the key's identity on the first
    request, keeps the second's response (just after sending it), and replays it from then on."""
    before = entries_kept()
    for _ in range(2):
        response = client.get(path, **kwargs)
        assert response.status_code == 200, response.text
    assert wait_for(lambda: entries_kept() - before, timeout=10), "no response was kept"
    return response


def _hits(namespace: str) -> int:
    return ns_stats(stats_get(), namespace)["hits"]


def _without_limits(headers: httpx.Headers) -> dict:
    return {
        name: value
        for name, value in headers.items()
        if not name.lower().startswith(("ratelimit", "x-ratelimit", "date", "server"))
    }


def test_a_kept_response_is_replayed_until_a_write_invalidates_its_reads(edge_server, user):
    unlimited(user)
    conversation = Conversation.objects.create(owner=user, title="before")
    _key, raw = api_key_create(user=user, name="edge")
    with _client(edge_server, raw) as client:
        made_by_django = _kept(client, LIST)
        # Change the row behind the cache's back and drop the view's cached read: only a
        # replayed response can still say "before".
        Conversation.objects.filter(pk=conversation.pk).update(title="behind the cache")
        assert _drop_cached_reads("user_conversations") > 0
        replayed = client.get(LIST)
        assert replayed.status_code == 200
        assert replayed.json()["results"][0]["title"] == "before"
        assert replayed.content == made_by_django.content
        assert _without_limits(replayed.headers) == _without_limits(made_by_django.headers)
        assert replayed.headers["RateLimit-Policy"] == made_by_django.headers["RateLimit-Policy"]

        conversation_update(user=user, conversation_id=conversation.pk, title="after")
        assert client.get(LIST).json()["results"][0]["title"] == "after"


def test_after_a_redis_timeout_the_edge_leaves_requests_to_django_for_a_while(edge_server, user):
    """The edge's Redis call runs on the event loop: a Redis that hangs would stall the loop
    for a whole timeout each time the limiter retries it. After a failure the edge steps
    aside (CACHE_EDGE_QUIET_SECONDS, 3 s for this server), then replays again."""
    unlimited(user)
    conversation = Conversation.objects.create(owner=user, title="kept")
    _key, raw = api_key_create(user=user, name="edge")
    redis_server = get_redis_connection("default")

    def title(client: httpx.Client) -> str:
        response = client.get(LIST)
        assert response.status_code == 200, response.text
        return response.json()["results"][0]["title"]

    with _client(edge_server, raw) as client:
        _kept(client, LIST)
        # Redis holds every script call for 1 s: the edge's check times out (0.25 s).
        redis_server.client_pause(1000, all=False)
        failed_at = time.monotonic()
        title(client)  # answered all the same (by Django, failing open)
        wait_for(lambda: time.monotonic() - failed_at > 1.5)  # Redis and breakers are back
        # Only Django, reading the database, can say "fresh": a replay would not.
        Conversation.objects.filter(pk=conversation.pk).update(title="fresh")
        _drop_cached_reads("user_conversations")
        assert title(client) == "fresh"
        assert time.monotonic() - failed_at < 3, "too slow to tell the quiet time apart"
        _drop_cached_reads("user_conversations")
        Conversation.objects.filter(pk=conversation.pk).update(title="fresher")
        # The server's failure came a timeout (0.25 s) after `failed_at`.
        wait_for(lambda: time.monotonic() - failed_at > 3.7)
        assert title(client) != "fresher"  # replayed from the edge again


def test_the_limiter_counts_every_request_once_and_refuses_replays_too(asgi_server, user):
    plan = Plan.objects.get(tier=Plan.Tier.PRO)
    plan.requests_per_minute, plan.conversations_per_minute = 1000, 6
    plan.save(update_fields=["requests_per_minute", "conversations_per_minute"])
    user.plan = plan
    user.save(update_fields=["plan"])
    time.sleep(settings.THROTTLE_CONFIG_TTL + 0.2)  # the server's limits snapshot is renewed
    Conversation.objects.create(owner=user, title="t")
    _key, raw = api_key_create(user=user, name="edge")
    with _client(asgi_server, raw) as client:
        responses = [client.get(LIST) for _ in range(8)]
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 6 + [429] * 2  # replays from the 3rd on: same budget
    remaining = [int(r.headers["X-RateLimit-Remaining"]) for r in responses[:6]]
    assert remaining == [5, 4, 3, 2, 1, 0]
    refused = responses[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["details"]["layer"] == "endpoint:conversations"
    assert int(refused.headers["Retry-After"]) >= 1


def test_revoked_keys_and_inactive_users_are_refused_at_once(edge_server, user):
    unlimited(user)
    key, raw = api_key_create(user=user, name="edge")
    with _client(edge_server, raw) as client:
        _kept(client, LIST)
        user.is_active = False
        user.save()
        assert client.get(LIST).status_code == 401
        user.is_active = True
        user.save()
        assert [client.get(LIST).status_code for _ in range(3)] == [200] * 3
        api_key_revoke(user=user, key_id=key.pk)
        response = client.get(LIST)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"


def test_an_expired_key_is_refused_without_any_write(edge_server, user):
    unlimited(user)
    key, raw = api_key_create(
        user=user, name="edge", expires_at=timezone.now() + dt.timedelta(seconds=3)
    )
    with _client(edge_server, raw) as client:
        _kept(client, LIST)
        assert wait_for(lambda: client.get(LIST).status_code == 401, timeout=10)
    assert ApiKey.objects.get(pk=key.pk).expires_at < timezone.now()


def test_kept_responses_are_per_caller_and_per_request(edge_server, user):
    unlimited(user)
    other = UserFactory()
    unlimited(other)
    for n in range(2):
        Conversation.objects.create(owner=user, title=f"mine {n}")
    Conversation.objects.create(owner=other, title="theirs")
    _key, raw = api_key_create(user=user, name="mine")
    _key, other_raw = api_key_create(user=other, name="theirs")
    with _client(edge_server, raw) as mine, _client(edge_server, other_raw) as theirs:
        assert [c["title"] for c in _kept(mine, LIST).json()["results"]] == ["mine 1", "mine 0"]
        assert [c["title"] for c in _kept(theirs, LIST).json()["results"]] == ["theirs"]
        # The links hold the host the caller used: another host is another response.
        page = f"{LIST}?page_size=1"
        by_ip = _kept(mine, page).json()
        assert by_ip["next"].startswith(edge_server.url)
        for _ in range(3):
            named = mine.get(page, headers={"Host": "localhost"}).json()
            assert named["next"].startswith("http://localhost/")
            assert mine.get(page).json() == by_ip
        # Another user's conversation is "not found", never kept for them.
        conversation = Conversation.objects.get(owner=user, title="mine 0")
        path = f"/api/v1/conversations/{conversation.pk}/messages/"
        _kept(mine, path)
        for _ in range(3):
            assert theirs.get(path).status_code == 404


def test_a_replay_records_the_keys_use_once_a_minute_without_losing_its_cached_row(
    edge_server, user
):
    from accounts.authentication import _api_key_row
    from openspark.core.cache import API_KEY, api_key_scope, cache_value_get, cache_value_set

    unlimited(user)
    key, raw = api_key_create(user=user, name="edge")
    with _client(edge_server, raw) as client:
        _kept(client, LIST)
        # The key's cached row says it was last used five minutes ago (time passing).
        key.refresh_from_db()
        stale = timezone.now() - dt.timedelta(minutes=5)
        key.last_used_at = stale
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=stale)
        scope = api_key_scope(key.key_hash)
        cache_value_set(API_KEY, key=key.key_hash, value=_api_key_row(key), scopes=scope)
        hits = _hits("user_conversations")
        assert client.get(LIST).status_code == 200
        assert _hits("user_conversations") == hits + 1  # replayed, counted once
        # Written by the edge, just after the response.
        assert wait_for(
            lambda: ApiKey.objects.get(pk=key.pk).last_used_at > stale + dt.timedelta(minutes=4)
        )
        key.refresh_from_db()
        row = cache_value_get(API_KEY, key=key.key_hash, scopes=scope)
        assert row is not None  # stored again with the new time, not dropped
        assert [client.get(LIST).status_code for _ in range(3)] == [200] * 3
        assert _hits("user_conversations") == hits + 4
    assert ApiKey.objects.get(pk=key.pk).last_used_at == key.last_used_at  # once a minute


def test_requests_with_cookies_or_without_a_key_are_djangos(edge_server, user):
    unlimited(user)
    _key, raw = api_key_create(user=user, name="edge")
    with _client(edge_server, raw) as client:
        kept = _kept(client, LIST)
        with_cookie = client.get(LIST, headers={"Cookie": "sessionid=nonsense"})
        assert with_cookie.status_code == 200 and with_cookie.content == kept.content
    anonymous = httpx.get(edge_server.url + LIST)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "not_authenticated"
    malformed = httpx.get(edge_server.url + LIST, headers={"Authorization": f"Bearer {raw} x"})
    assert malformed.status_code == 401
    assert "Traceback" not in edge_server.log()


def test_me_is_replayed_with_this_minutes_usage_read_afresh(edge_server, user):
    unlimited(user)
    _key, raw = api_key_create(user=user, name="edge")
    with _client(edge_server, raw) as client:
        made_by_django = _kept(client, "/api/v1/me/")
        # Only a replay can still show the old name (as in the first test).
        type(user).objects.filter(pk=user.pk).update(username="renamed-behind-the-cache")
        assert _drop_cached_reads("user_profile") > 0
        replays = [client.get("/api/v1/me/") for _ in range(3)]
        tokens_settle(user_id=user.id, prompt_tokens=7, completion_tokens=5)
        after_usage = client.get("/api/v1/me/").json()
    first = made_by_django.json()
    used = [r.json()["usage"]["plan"]["used"] for r in replays]
    assert used == [first["usage"]["plan"]["used"] + n for n in (1, 2, 3)]
    for response in replays:
        body = response.json()
        assert {k: v for k, v in body.items() if k != "usage"} == {
            k: v for k, v in first.items() if k != "usage"
        }
        assert body["usage"].keys() == first["usage"].keys()
        assert (
            _without_limits(response.headers).keys()
            == _without_limits(made_by_django.headers).keys()
        )
        assert int(response.headers["Content-Length"]) == len(response.content)
    assert after_usage["tokens"]["used_this_month"] == 12


def test_a_live_part_is_kept_apart_only_when_joining_it_back_gives_the_same_bytes():
    from rest_framework.renderers import JSONRenderer

    from openspark.core.cache.edge import _live_split, edge_join_live

    data = {"name": "line\u2028break «ü»", "n": 1.5, "usage": {"plan": {"reset": 0.25}}}
    body = JSONRenderer().render(data)
    kept = _live_split(body, "usage")
    assert kept is not None and b"usage" not in kept
    assert edge_join_live(kept, "usage", {"plan": {"reset": 0.25}}) == body
    assert _live_split(JSONRenderer().render({"usage": {}, "later": 1}), "usage") is None
    assert _live_split(b"[1, 2]", "usage") is None
    assert _live_split(b"{not json", "usage") is None
    assert _live_split(b'{"a": 1, "usage": 2}', "usage") is None  # not DRF's rendering


def test_ignored_parameters_and_header_variants_do_not_multiply_kept_responses(edge_server, user):
    unlimited(user)
    Conversation.objects.create(owner=user, title="t")
    _key, raw = api_key_create(user=user, name="edge")
    with _client(edge_server, raw) as client:
        _kept(client, LIST)
        kept = entries_kept()
        for query in ("x=1", "x=2", "page=1&page=1", "page=01x", "page_size=5&junk="):
            for _ in range(2):
                assert client.get(f"{LIST}?{query}").status_code in (200, 404)
        # Another Accept-Language is another response (Content-Language), kept in the same
        # place: the right one each time, never one more copy per variant.
        for language, expected in [("zh-hans", "zh-hans"), ("en", "en")] * 2:
            responses = [client.get(LIST, headers={"Accept-Language": language}) for _ in range(3)]
            assert [r.headers["Content-Language"] for r in responses] == [expected] * 3
        for n in range(20):
            client.get(LIST, headers={"Accept-Language": f"x-{n}"})
        time.sleep(0.5)  # past any store still on its way
        assert entries_kept() - kept == set()


def test_hostile_requests_get_djangos_answers_never_a_500(edge_server, user):
    unlimited(user)
    _key, raw = api_key_create(user=user, name="edge")
    with _client(edge_server, raw) as client:
        _kept(client, LIST)
        answers = [
            client.get(LIST, headers={"Authorization": b"Bearer osk_\xff\xfe"}),
            client.get(LIST, headers={"Authorization": "Bearer"}),
            client.get(LIST, headers={"Authorization": f"bearer {raw}"}),  # any case, as DRF
            client.get(LIST + "?" + "page=1&" * 2000),
            client.get(LIST + "?page=999999999999"),
            client.get("/api/v1/conversations/99999999999999999999/messages/"),
            client.get("/api/v1/nowhere/"),
            client.head(LIST),
            client.get(LIST, headers={"Host": "evil.example"}),
            client.get(LIST, headers={"Accept": "text/html"}),
            client.request("GET", LIST, content=b"x" * 10_000),
        ]
    statuses = [a.status_code for a in answers]
    assert statuses == [401, 401, 200, 400, 404, 404, 404, 200, 400, 406, 200], statuses
    for answer in answers:
        if answer.request.method != "HEAD":
            assert answer.content.startswith(b"{"), (answer.status_code, answer.content[:300])
    # (Django logs a refused Host with its traceback, as a security event; no error is.)
    assert "Internal Server Error" not in edge_server.log(tail=None)


def test_responses_of_views_that_do_not_keep_are_never_kept(edge_server, user):
    unlimited(user)
    _key, raw = api_key_create(user=user, name="edge")
    with _client(edge_server, raw) as client:
        _kept(client, LIST)
        kept = entries_kept()
        for _ in range(4):
            assert client.get("/api/v1/api-keys/").status_code == 200
        time.sleep(0.5)  # past any store still on its way
    assert entries_kept() == kept
