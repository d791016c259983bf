"""Rules never outlive what they were built from: a changed setting or a staff edit applies
to the next check."""

import pytest

from throttling.identity import Identity
from throttling.rules import ALL_LAYERS, limiter_rules_build
from throttling.selectors import limiter_config_get

pytestmark = pytest.mark.django_db

CALLER = Identity(user_id=None, plan_id=None, ip="203.0.113.7")


def _rules():
    return limiter_rules_build(
        config=limiter_config_get(),
        identity=CALLER,
        path="/api/v1/messages/",
        method="POST",
        layers=ALL_LAYERS,
    )


def _limits(rules) -> dict[str, int]:
    return {rule.layer: rule.limit for rule in rules}


def test_a_changed_setting_or_a_staff_edit_gives_fresh_rules(settings):
    from throttling.models import Plan

    assert _limits(_rules())["ip"] == settings.THROTTLE_IP_LIMIT
    settings.THROTTLE_IP_LIMIT = 7
    assert _limits(_rules())["ip"] == 7
    plan = Plan.objects.get(is_default=True)
    plan.messages_per_minute = 3
    plan.save()  # as in the admin
    assert _limits(_rules())["endpoint:messages"] == 3
