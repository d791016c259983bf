"""Table-driven: every write path → the cached reads it affects show the write at once.

Each row primes the cache (the read is served from it: a hit is counted), performs the write
through its real path (admin form, service), then reads again."""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.test import Client
from rest_framework.test import APIClient

from openspark.core.cache import stats_get
from tests.cache.conftest import ns_stats
from tests.cache.forms import admin_form_post
from tests.factories import plan
from throttling.models import Plan
from throttling.services import token_usage_record

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Row:
    write: str
    write_fn: Callable
    read: str
    namespace: str
    expect: Callable


def _stable(body: dict) -> dict:
    """A response without its live parts (the limiter's usage this minute is never cached)."""
    return {key: value for key, value in body.items() if key != "usage"}


def _user_change(user, **changes):
    return lambda ctx: admin_form_post(
        ctx["admin"], f"/admin/accounts/user/{user.id}/change/", "user_form", **changes
    )


def _plan_change(tier, **changes):
    return lambda ctx: admin_form_post(
        ctx["admin"], f"/admin/throttling/plan/{plan(tier).id}/change/", "plan_form", **changes
    )


def _make_pro_default(ctx):
    _plan_change("free", is_default=False)(ctx)
    _plan_change("pro", is_default=True)(ctx)


def _rows(user):
    return [
        Row(
            "admin: move the user to another plan",
            _user_change(user, plan=plan("pro").id),
            "/api/v1/me/",
            "user_profile",
            lambda body: body["plan"]["tier"] == "pro",
        ),
        Row(
            "admin: edit the limits of the user's plan",
            _plan_change("free", requests_per_minute=150),
            "/api/v1/me/",
            "user_profile",
            lambda body: body["plan"]["requests_per_minute"] == 150,
        ),
        Row(
            "admin: make another plan the default",
            _make_pro_default,
            "/api/v1/me/",
            "user_profile",
            lambda body: body["plan"]["tier"] == "pro",
        ),
        Row(
            "admin: change the user's e-mail",
            _user_change(user, email="new-address@example.com"),
            "/api/v1/me/",
            "user_profile",
            lambda body: body["email"] == "new-address@example.com",
        ),
        Row(
            "service: a reply's token usage is recorded",
            lambda ctx: token_usage_record(user_id=user.id, prompt_tokens=40, completion_tokens=2),
            "/api/v1/me/",
            "user_profile",
            lambda body: body["tokens"]["used_this_month"] == 42,
        ),
    ]


ROW_NAMES = [
    "admin: move the user to another plan",
    "admin: edit the limits of the user's plan",
    "admin: make another plan the default",
    "admin: change the user's e-mail",
    "service: a reply's token usage is recorded",
]


@pytest.mark.parametrize("row_name", ROW_NAMES)
def test_write_path_invalidates_the_reads_it_affects(row_name, user, staff_user):
    row = next(row for row in _rows(user) if row.write == row_name)
    reader = APIClient()
    reader.force_authenticate(user)
    admin = Client()
    admin.force_login(staff_user)

    before = reader.get(row.read)
    assert before.status_code == 200
    assert not row.expect(before.json())
    hits = ns_stats(stats_get(), row.namespace)["hits"]
    assert _stable(reader.get(row.read).json()) == _stable(before.json())
    assert ns_stats(stats_get(), row.namespace)["hits"] == hits + 1  # it is served cached

    row.write_fn({"admin": admin})

    after = reader.get(row.read)
    assert after.status_code == 200
    assert row.expect(after.json()), (row.write, after.json())


def test_the_table_covers_every_row():
    assert [row.write for row in _rows(type("U", (), {"id": 0})())] == ROW_NAMES


def test_login_does_not_invalidate_the_profile(user):
    """Logging in saves last_login, which no cached read shows: the profile stays cached."""
    reader = APIClient()
    reader.force_authenticate(user)
    reader.get("/api/v1/me/")
    Client().force_login(user)
    reader.get("/api/v1/me/")
    assert ns_stats(stats_get(), "user_profile")["hits"] == 1


def test_plan_switch_for_cached_answers_is_in_the_admin(staff_user):
    admin = Client()
    admin.force_login(staff_user)
    free = Plan.objects.get(tier="free")
    assert free.ai_response_cache_enabled is True
    _plan_change("free", ai_response_cache_enabled=False)({"admin": admin})
    free.refresh_from_db()
    assert free.ai_response_cache_enabled is False
