"""Table-driven: every write path → the cached reads it affects show the write at once.

Each row prepares its state, primes the cache with each read (and checks the second read is
served from the cache), performs the write through its real path (API endpoint, admin form,
worker service), then reads again and checks the change."""

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.test import Client
from rest_framework.test import APIClient

from conversations.models import Conversation, Message
from conversations.services import conversation_title_generate, message_send, reply_generate
from knowledge.models import KnowledgeBase
from openspark.core.cache import stats_get
from tests.cache.conftest import ns_stats
from tests.cache.forms import admin_form_post
from tests.factories import plan
from throttling.models import Plan
from throttling.quota import tokens_settle

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ME = "/api/v1/me/"
LIST = "/api/v1/conversations/"


def history(ctx, key="a") -> str:
    return f"/api/v1/conversations/{ctx[key].id}/messages/"


@dataclass
class Read:
    path: Callable[[dict], str]
    namespace: str
    # (ctx, body before the write, response after it) → the write is visible
    expect: Callable[[dict, dict, object], bool]


@dataclass
class Row:
    write: str
    do: Callable[[dict], object]
    reads: list[Read]
    prepare: Callable[[dict], None] = field(default=lambda ctx: None)


def _user_change(**changes):
    """Values may be callables, evaluated when the row runs (ids exist only then)."""
    return lambda ctx: admin_form_post(
        ctx["admin"],
        f"/admin/accounts/user/{ctx['user'].id}/change/",
        "user_form",
        **{name: value() if callable(value) else value for name, value in changes.items()},
    )


def _plan_change(tier, **changes):
    return lambda ctx: admin_form_post(
        ctx["admin"], f"/admin/throttling/plan/{plan(tier).id}/change/", "plan_form", **changes
    )


def _make_pro_default(ctx):
    _plan_change("free", is_default=False)(ctx)
    _plan_change("pro", is_default=True)(ctx)


def _send_pending(ctx):
    _question, ctx["pending"], _task = message_send(
        user=ctx["user"], content="And the moon?", conversation_id=ctx["a"].id
    )


def _ok(response) -> dict:
    assert response.status_code < 300, response.content
    return response.json() if response.content else {}


def _ids(body) -> list[int]:
    return [c["id"] for c in body["results"]]


def _message(body, message_id) -> dict:
    return next(m for m in body["results"] if m["id"] == message_id)


def me(expect) -> Read:
    return Read(lambda ctx: ME, "user_profile", lambda ctx, before, after: expect(after.json()))


def listing(expect) -> Read:
    return Read(lambda ctx: LIST, "user_conversations", expect)


def hist(expect) -> Read:
    return Read(history, "conversation_history", expect)


ROWS = [
    Row("admin: move the user to another plan", _user_change(plan=lambda: plan("pro").id),
        [me(lambda body: body["plan"]["tier"] == "pro")]),
    Row("admin: edit the limits of the user's plan", _plan_change("free", requests_per_minute=150),
        [me(lambda body: body["plan"]["requests_per_minute"] == 150)]),
    Row("admin: make another plan the default", _make_pro_default,
        [me(lambda body: body["plan"]["tier"] == "pro")]),
    Row("admin: change the user's e-mail", _user_change(email="new-address@example.com"),
        [me(lambda body: body["email"] == "new-address@example.com")]),
    Row("service: a reply's token usage is recorded",
        lambda ctx: tokens_settle(
            user_id=ctx["user"].id, prompt_tokens=40, completion_tokens=2),
        [Read(lambda ctx: ME, "user_profile", lambda ctx, before, after: (
            after.json()["tokens"]["used_this_month"]
            == before["tokens"]["used_this_month"] + 42))]),
    Row("POST conversations/",
        lambda ctx: ctx.update(new=_ok(ctx["api"].post(LIST, {"title": "New"}, format="json"))),
        [listing(lambda ctx, before, after: _ids(after.json())[0] == ctx["new"]["id"])]),
    Row("PATCH conversations/{id}/",
        lambda ctx: _ok(ctx["api"].patch(f"{LIST}{ctx['a'].id}/", {"title": "Renamed"},
                                         format="json")),
        [listing(lambda ctx, before, after: any(
            c["title"] == "Renamed" for c in after.json()["results"]))]),
    Row("PATCH conversations/{id}/ (knowledge bases)",
        lambda ctx: _ok(ctx["api"].patch(f"{LIST}{ctx['a'].id}/",
                                         {"knowledge_base_ids": [ctx["kb"].id]}, format="json")),
        [listing(lambda ctx, before, after: [ctx["kb"].id] in [
            c["knowledge_base_ids"] for c in after.json()["results"]])]),
    Row("DELETE conversations/{id}/",
        lambda ctx: ctx["api"].delete(f"{LIST}{ctx['a'].id}/"),
        [listing(lambda ctx, before, after: ctx["a"].id not in _ids(after.json())),
         hist(lambda ctx, before, after: after.status_code == 404)]),
    Row("POST messages/",
        lambda ctx: _ok(ctx["api"].post("/api/v1/messages/",
                                        {"conversation_id": ctx["a"].id, "content": "More?"},
                                        format="json")),
        [hist(lambda ctx, before, after: after.json()["count"] == before["count"] + 2),
         listing(lambda ctx, before, after: _ids(after.json())[0] == ctx["a"].id)]),
    Row("POST messages/{id}/feedback",
        lambda ctx: _ok(ctx["api"].post(f"/api/v1/messages/{ctx['reply'].id}/feedback",
                                        {"rating": -1}, format="json")),
        [hist(lambda ctx, before, after: _message(after.json(), ctx["reply"].id)["feedback"]
              == {"rating": -1, "comment": ""})]),
    Row("POST messages/{id}/stop",
        lambda ctx: _ok(ctx["api"].post(f"/api/v1/messages/{ctx['pending'].id}/stop")),
        [hist(lambda ctx, before, after: _message(after.json(), ctx["pending"].id)["status"]
              == "stopped")],
        prepare=_send_pending),
    Row("POST messages/{id}/regenerate",
        lambda ctx: _ok(ctx["api"].post(f"/api/v1/messages/{ctx['reply'].id}/regenerate")),
        [hist(lambda ctx, before, after: after.json()["count"] == before["count"] + 1),
         listing(lambda ctx, before, after: _ids(after.json())[0] == ctx["a"].id)]),
    Row("worker: generate_ai_response completes a reply",
        lambda ctx: reply_generate(message_id=ctx["pending"].id),
        [hist(lambda ctx, before, after: _message(after.json(), ctx["pending"].id)["status"]
              == "completed" and _message(after.json(), ctx["pending"].id)["content"])],
        prepare=_send_pending),
    Row("worker: generate_conversation_title names a conversation",
        lambda ctx: conversation_title_generate(conversation_id=ctx["a"].id),
        [listing(lambda ctx, before, after: next(
            c for c in after.json()["results"] if c["id"] == ctx["a"].id)["title"])],
        prepare=lambda ctx: Conversation.objects.filter(id=ctx["a"].id).update(title="")),
    Row("delete a knowledge base attached to a conversation",
        lambda ctx: KnowledgeBase.objects.filter(id=ctx["kb"].id).delete(),
        [listing(lambda ctx, before, after: all(
            c["knowledge_base_ids"] == [] for c in after.json()["results"]))],
        prepare=lambda ctx: ctx["a"].knowledge_bases.add(ctx["kb"])),
]  # fmt: skip


def _stable(body: dict) -> dict:
    """A response without its live parts (the limiter's usage this minute is never cached)."""
    return {key: value for key, value in body.items() if key != "usage"}


@pytest.fixture
def ctx(user, staff_user, settings):
    settings.LLM_PROVIDER = "offline"
    api = APIClient()
    api.force_authenticate(user)
    admin = Client()
    admin.force_login(staff_user)
    kb = KnowledgeBase.objects.create(owner=user, name="Manuals")
    # Conversation a: one finished exchange; b: newer, so a is not on top of the list.
    question, reply, _task = message_send(user=user, content="How do tides work?")
    reply_generate(message_id=reply.id)
    b = Conversation.objects.create(owner=user, title="Newer")
    tokens_settle(user_id=user.id, prompt_tokens=1, completion_tokens=0)
    return {
        "user": user,
        "api": api,
        "admin": admin,
        "kb": kb,
        "a": question.conversation,
        "b": b,
        "reply": Message.objects.get(id=reply.id),
    }


class _ClientCopy:
    """What a client that sent `If-None-Match` shows after a 304: its own copy."""

    status_code = 200

    def __init__(self, body) -> None:
        self._body = body

    def json(self):
        return self._body


@pytest.fixture(params=["plain", "conditional"])
def revalidate(request) -> bool:
    """Whether the read after the write is a conditional request with the ETag of the read
    before it (a 304 then means the client keeps its copy: stale if the write changed it)."""
    return request.param == "conditional"


@pytest.mark.parametrize("row", ROWS, ids=[row.write for row in ROWS])
def test_write_path_invalidates_the_reads_it_affects(row, ctx, revalidate):
    get = ctx["api"].get
    row.prepare(ctx)
    befores = []
    for read in row.reads:
        before = get(read.path(ctx))
        assert before.status_code == 200
        hits = ns_stats(stats_get(), read.namespace)["hits"]
        again = get(read.path(ctx))
        assert _stable(again.json()) == _stable(before.json())
        assert ns_stats(stats_get(), read.namespace)["hits"] == hits + 1  # served cached
        befores.append(before)

    row.do(ctx)

    for read, before in zip(row.reads, befores, strict=True):
        etag = before.get("ETag") if revalidate else None
        after = get(read.path(ctx), **({"HTTP_IF_NONE_MATCH": etag} if etag else {}))
        if after.status_code == 304:
            after = _ClientCopy(before.json())
        assert after.status_code in (200, 404)
        assert read.expect(ctx, before.json(), after), (row.write, read.path(ctx))


def test_login_does_not_invalidate_the_profile(user):
    """Logging in saves last_login, which no cached read shows: the profile stays cached."""
    reader = APIClient()
    reader.force_authenticate(user)
    reader.get(ME)
    Client().force_login(user)
    reader.get(ME)
    assert ns_stats(stats_get(), "user_profile")["hits"] == 1


def test_history_is_never_served_to_another_user(ctx, other_user):
    assert ctx["api"].get(history(ctx)).status_code == 200
    intruder = APIClient()
    intruder.force_authenticate(other_user)
    response = intruder.get(history(ctx))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_cached_pages_keep_their_links(ctx):
    for n in range(3):
        Conversation.objects.create(owner=ctx["user"], title=f"extra {n}")
    first = ctx["api"].get(f"{LIST}?page_size=2&page=2").json()
    second = ctx["api"].get(f"{LIST}?page_size=2&page=2").json()
    assert first == second
    assert first["previous"].endswith("?page_size=2")
    assert "page=3" in first["next"] and "page_size=2" in first["next"]
    assert first["count"] == 5 and len(first["results"]) == 2
    assert ctx["api"].get(f"{LIST}?page=99").status_code == 404


def test_plan_switch_for_cached_answers_is_in_the_admin(staff_user):
    admin = Client()
    admin.force_login(staff_user)
    free = Plan.objects.get(tier="free")
    assert free.ai_response_cache_enabled is True
    _plan_change("free", ai_response_cache_enabled=False)({"admin": admin})
    free.refresh_from_db()
    assert free.ai_response_cache_enabled is False
