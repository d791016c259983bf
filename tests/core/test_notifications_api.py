"""Notifications through the API and the services, in this process (e-mail: Django's locmem
outbox): list/read/read-all, owner only, preferences, delivery at most once."""

from __future__ import annotations

import smtplib

import pytest
from django.core import mail
from django.utils import timezone

from openspark.core.models import Notification, TaskRecord
from openspark.core.services import notification_deliver, notification_send
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

Kind = Notification.Kind


def _send(user, title: str, **fields) -> Notification:
    return notification_send(
        user=user, kind=fields.pop("kind", Kind.GENERAL), title=title, **fields
    )


def test_list_newest_first_unread_filter_read_and_read_all(auth_client, user, other_user):
    first, second, third = (_send(user, f"n{i}") for i in range(3))
    _send(other_user, "not yours")

    page = auth_client.get("/api/v1/notifications/?page_size=2").json()
    assert page["count"] == 3 and page["unread_count"] == 3
    assert [n["title"] for n in page["results"]] == ["n2", "n1"]
    assert page["next"] and page["results"][0]["read"] is False

    read = auth_client.post(f"/api/v1/notifications/{second.id}/read")
    assert read.status_code == 200
    assert read.json()["notification"]["read"] is True and read.json()["unread_count"] == 2
    # Reading twice changes nothing.
    again = auth_client.post(f"/api/v1/notifications/{second.id}/read").json()
    assert again["notification"]["read_at"] == read.json()["notification"]["read_at"]

    unread = auth_client.get("/api/v1/notifications/?unread=1").json()
    assert [n["id"] for n in unread["results"]] == [third.id, first.id]

    done = auth_client.post("/api/v1/notifications/read-all").json()
    assert done == {"marked": 2, "unread_count": 0}
    assert auth_client.get("/api/v1/notifications/?unread=1").json()["count"] == 0
    assert Notification.objects.get(user=other_user).read_at is None


def test_another_users_notification_is_404_in_the_error_shape(auth_client, other_user):
    theirs = _send(other_user, "private")
    response = auth_client.post(f"/api/v1/notifications/{theirs.id}/read")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert Notification.objects.get(id=theirs.id).read_at is None
    assert auth_client.get("/api/v1/notifications/").json()["count"] == 0


def test_anonymous_is_refused(api_client):
    response = api_client.get("/api/v1/notifications/")
    assert response.status_code in (401, 403)
    assert "error" in response.json()


def test_preferences_read_update_and_unknown_kind(auth_client, user):
    prefs = auth_client.get("/api/v1/notifications/preferences/").json()
    assert prefs["has_email_address"] is True
    assert prefs["email"]["document_ready"] is True and prefs["email"]["reply_finished"] is False
    assert "staff_alert" not in prefs["email"]  # staff only
    assert prefs["labels"]["document_ready"]

    updated = auth_client.patch(
        "/api/v1/notifications/preferences/", {"email": {"document_ready": False}}, format="json"
    ).json()
    assert updated["email"]["document_ready"] is False
    assert updated["email"]["document_failed"] is True  # not named: unchanged

    bad = auth_client.patch(
        "/api/v1/notifications/preferences/", {"email": {"nonsense": True}}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "validation_error"


def _deliveries(user) -> int:
    return TaskRecord.objects.filter(name="send_notification", user=user).count()


def test_email_preference_is_honoured(auth_client, user):
    auth_client.patch(
        "/api/v1/notifications/preferences/", {"email": {"document_ready": False}}, format="json"
    )
    muted = _send(user, "ready", kind=Kind.DOCUMENT_READY)
    wanted = _send(user, "failed", kind=Kind.DOCUMENT_FAILED)
    assert muted.email_status == "skipped" and wanted.email_status == "pending"
    assert _deliveries(user) == 1  # only the wanted one is queued

    assert notification_deliver(notification_id=muted.id) is False
    assert notification_deliver(notification_id=wanted.id) is True
    assert [m.subject for m in mail.outbox] == ["[OpenSpark] failed"]
    assert mail.outbox[0].to == [user.email]


def test_a_user_without_an_address_gets_the_notification_in_app_only(db):
    user = UserFactory(email="")
    notification = _send(user, "Document ready", kind=Kind.DOCUMENT_READY)
    assert notification.email_status == "skipped" and _deliveries(user) == 0
    assert notification_deliver(notification_id=notification.id) is False
    assert mail.outbox == []
    assert Notification.objects.filter(user=user, read_at__isnull=True).count() == 1


class _RelayDownOnce:
    """An e-mail backend whose relay refuses the first connection (outside the machine)."""

    failures = 1

    def __init__(self, *args, **kwargs) -> None:
        from django.core.mail.backends.locmem import EmailBackend

        self.inner = EmailBackend(*args, **kwargs)

    def send_messages(self, messages):
        if _RelayDownOnce.failures:
            _RelayDownOnce.failures -= 1
            raise smtplib.SMTPConnectError(421, "relay unavailable")
        return self.inner.send_messages(messages)


def test_delivery_is_claimed_once_and_a_failed_send_can_be_retried(settings, user):
    settings.EMAIL_BACKEND = f"{__name__}._RelayDownOnce"
    notification = _send(user, "once")
    with pytest.raises(smtplib.SMTPConnectError):
        notification_deliver(notification_id=notification.id)  # the task retries this
    notification.refresh_from_db()
    assert notification.email_status == "pending"  # the claim was given back

    assert notification_deliver(notification_id=notification.id) is True
    # A duplicate or redelivered task finds it sent.
    assert notification_deliver(notification_id=notification.id) is False
    assert [m.subject for m in mail.outbox] == ["[OpenSpark] once"]


def test_a_claim_held_by_a_running_delivery_is_not_taken(user):
    notification = _send(user, "in flight")
    Notification.objects.filter(id=notification.id).update(
        email_status="sending", email_claimed_at=timezone.now()
    )
    assert notification_deliver(notification_id=notification.id) is False
    assert mail.outbox == []


def test_dedup_key_gives_one_notification_per_key(user):
    assert _send(user, "a", dedup_key="k") is not None
    assert _send(user, "b", dedup_key="k") is None
    assert Notification.objects.filter(user=user).count() == 1


def test_kind_labels_follow_the_language(auth_client):
    english = auth_client.get("/api/v1/notifications/preferences/").json()["labels"]
    chinese = auth_client.get(
        "/api/v1/notifications/preferences/", HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).json()["labels"]
    assert english["document_ready"] == "A document is ready"
    assert chinese["document_ready"] == "文档处理完成"
    assert all(chinese[kind] != english[kind] for kind in english)
