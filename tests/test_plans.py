import pytest

from throttling.models import Plan
from throttling.plans import endpoint_limits_scale, endpoint_limits_unscale
from throttling.selectors import plan_for_user

pytestmark = pytest.mark.django_db

UNSCALED = {"conversations_per_minute": 60, "messages_per_minute": 120, "knowledge_per_minute": 30}


def test_plans_seeded_with_the_plan_numbers():
    plans = {p.tier: p for p in Plan.objects.all()}
    assert set(plans) == {"free", "pro", "enterprise"}
    assert plans["free"].requests_per_minute == 100
    assert plans["pro"].requests_per_minute == 500
    assert plans["enterprise"].requests_per_minute == 2000
    # Endpoint groups scale with the plan's requests/min: pro x5, enterprise x20.
    assert plans["free"].endpoint_limits == {
        "conversations": 60, "messages": 120, "knowledge": 30, "polling": 60
    }  # fmt: skip
    assert plans["pro"].endpoint_limits == {
        "conversations": 300, "messages": 600, "knowledge": 150, "polling": 300
    }  # fmt: skip
    assert plans["enterprise"].endpoint_limits == {
        "conversations": 1200, "messages": 2400, "knowledge": 600, "polling": 1200
    }  # fmt: skip
    assert [p.tier for p in Plan.objects.filter(is_default=True)] == ["free"]


def test_scaling_migration_leaves_staff_edited_group_limits_alone():
    # As before the migration: every tier at the unscaled seed, polling at the column default.
    Plan.objects.update(**UNSCALED, polling_per_minute=60)
    # Staff raised one of enterprise's groups and set pro's polling group by hand.
    Plan.objects.filter(tier="enterprise").update(messages_per_minute=500)
    Plan.objects.filter(tier="pro").update(polling_per_minute=90)

    assert endpoint_limits_scale(Plan) == ["pro"]

    plans = {p.tier: p for p in Plan.objects.all()}
    assert plans["free"].endpoint_limits == {
        "conversations": 60, "messages": 120, "knowledge": 30, "polling": 60
    }  # fmt: skip
    assert plans["pro"].endpoint_limits == {
        "conversations": 300, "messages": 600, "knowledge": 150, "polling": 90
    }  # fmt: skip
    # An edited plan keeps all of its group limits; only the new polling column scales.
    assert plans["enterprise"].endpoint_limits == {
        "conversations": 60, "messages": 500, "knowledge": 30, "polling": 1200
    }  # fmt: skip

    endpoint_limits_unscale(Plan)  # the migration's reverse: only plans at the scaled values
    plans = {p.tier: p for p in Plan.objects.all()}
    assert plans["pro"].endpoint_limits | {"polling": 0} == {
        "conversations": 60, "messages": 120, "knowledge": 30, "polling": 0
    }  # fmt: skip
    assert plans["enterprise"].messages_per_minute == 500


def test_user_without_plan_is_on_the_default(user):
    assert user.plan_id is None
    assert plan_for_user(user).tier == "free"
