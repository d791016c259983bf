"""The limiter's and the quota's notifications: 80 % and 100 % of the month's tokens once
each per month, and staff told of a new limiter alert once (as the alert is de-duplicated)."""

import pytest

from openspark.core.models import Notification
from tests.factories import UserFactory, plan
from throttling.alerts import alert_raise, alerts_reset_dedup
from throttling.models import Alert
from throttling.quota import tokens_settle
from throttling.selectors import month_start

pytestmark = pytest.mark.django_db


def _kinds(user) -> list[str]:
    return list(
        Notification.objects.filter(user=user).order_by("id").values_list("kind", flat=True)
    )


def test_quota_80_and_100_percent_once_each(user):
    quota = plan("free").monthly_token_quota
    assert quota > 100
    tokens_settle(user_id=user.id, prompt_tokens=quota * 79 // 100, completion_tokens=0)
    assert _kinds(user) == []
    tokens_settle(user_id=user.id, prompt_tokens=quota // 100 + 1, completion_tokens=0)
    tokens_settle(user_id=user.id, prompt_tokens=1, completion_tokens=0)
    assert _kinds(user) == ["quota_warning"]
    warning = Notification.objects.get(user=user)
    assert warning.dedup_key == f"quota:{month_start():%Y-%m}:80" and "80%" in warning.title
    assert warning.url == "/accounts/" and warning.email_status == "pending"

    tokens_settle(user_id=user.id, prompt_tokens=0, completion_tokens=quota)
    tokens_settle(user_id=user.id, prompt_tokens=0, completion_tokens=10)
    assert _kinds(user) == ["quota_warning", "quota_exhausted"]


def test_a_jump_past_both_thresholds_sends_only_the_100_percent_one(user):
    tokens_settle(
        user_id=user.id, prompt_tokens=plan("free").monthly_token_quota, completion_tokens=0
    )
    assert _kinds(user) == ["quota_exhausted"]


def test_unlimited_quota_sends_nothing(user):
    enterprise = plan("enterprise")
    enterprise.monthly_token_quota = 0
    enterprise.save()
    user.plan = enterprise
    user.save()
    tokens_settle(user_id=user.id, prompt_tokens=10**9, completion_tokens=0)
    assert _kinds(user) == []


def test_staff_hear_of_a_new_alert_once(user, staff_user):
    other_staff = UserFactory(is_staff=True)
    UserFactory(is_staff=True, is_active=False)
    alert_raise(kind=Alert.Kind.DENY_SPIKE, message="Many requests are being refused.")
    alert_raise(kind=Alert.Kind.DENY_SPIKE, message="Many requests are being refused.")
    alerts_reset_dedup()  # another process raising it: the row is bumped, not duplicated
    alert_raise(kind=Alert.Kind.DENY_SPIKE, message="Many requests are being refused.")
    alert = Alert.objects.get()
    assert alert.count == 2
    for member in (staff_user, other_staff):
        (notification,) = Notification.objects.filter(user=member)
        assert notification.kind == "staff_alert" and notification.dedup_key == f"alert:{alert.id}"
        assert notification.url == f"/admin/throttling/alert/{alert.id}/change/"
    assert _kinds(user) == []
    assert Notification.objects.count() == 2
