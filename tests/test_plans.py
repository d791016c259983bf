import pytest

from throttling.models import Plan
from throttling.selectors import plan_for_user

pytestmark = pytest.mark.django_db


def test_plans_seeded_with_the_plan_numbers():
    plans = {p.tier: p for p in Plan.objects.all()}
    assert set(plans) == {"free", "pro", "enterprise"}
    assert plans["free"].requests_per_minute == 100
    assert plans["pro"].requests_per_minute == 500
    assert plans["enterprise"].requests_per_minute == 2000
    for plan in plans.values():
        assert plan.endpoint_limits == {"conversations": 60, "messages": 120, "knowledge": 30}
    assert [p.tier for p in Plan.objects.filter(is_default=True)] == ["free"]


def test_user_without_plan_is_on_the_default(user):
    assert user.plan_id is None
    assert plan_for_user(user).tier == "free"
