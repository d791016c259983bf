"""Rules are built once per caller, path and layers for a configuration snapshot
(`LimiterConfig.memo`), and never outlive what they were built from."""

import pytest

from throttling.selectors import limiter_config_get
from throttling.services import ALL_LAYERS, Identity, limiter_rules_build

pytestmark = pytest.mark.django_db

CALLER = Identity(user_id=None, plan_id=None, ip="203.0.113.7")


def _rules():
    return limiter_rules_build(
        config=limiter_config_get(), identity=CALLER, path="/api/v1/messages/", layers=ALL_LAYERS
    )


def _limits(rules) -> dict[str, int]:
    return {rule.layer: rule.limit for rule in rules}


def test_rules_are_built_once_per_snapshot(settings):
    first = _rules()
    assert _rules() is first  # the memo's own tuple
    assert _limits(first)["ip"] == settings.THROTTLE_IP_LIMIT


def test_a_changed_setting_or_a_staff_edit_gives_fresh_rules(settings):
    from throttling.models import Plan

    before = _rules()
    settings.THROTTLE_IP_LIMIT = 7
    assert _limits(_rules())["ip"] == 7
    plan = Plan.objects.get(is_default=True)
    plan.messages_per_minute = 3
    plan.save()  # as in the admin
    after = _rules()
    assert after is not before and _limits(after)["endpoint:messages"] == 3
