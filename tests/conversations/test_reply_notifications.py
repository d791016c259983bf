"""A reply that finishes while its owner has no page open becomes a notification; with a page
open (a live socket, in any process: Redis presence) it does not. A reply that fails fails
its task too, with the reply's error. Real worker, ASGI server, Redis and GLM test server."""

from __future__ import annotations

import json
import time

import pytest
from django_celery_results.models import TaskResult
from rest_framework.test import APIClient

from conversations.models import Message
from openspark.core.models import DeadLetter, Notification, TaskRecord
from tests.live import redis_delete_matching

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(autouse=True)
def _no_presence():
    """User ids repeat from one test to the next; so would a presence left behind."""
    redis_delete_matching("presence:*")


def _task_finished(task_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = TaskResult.objects.filter(task_id=task_id).values_list("status", flat=True)
        if status and status[0] in ("SUCCESS", "FAILURE"):
            return status[0]
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish")


def _settle(user) -> None:
    """Wait for the user's other tasks (the title) so none runs on into the next test."""
    for record in TaskRecord.objects.filter(user=user, name="generate_conversation_title"):
        _task_finished(record.task_id)


def _send_over_api(user, content: str) -> Message:
    client = APIClient()
    client.force_authenticate(user)
    response = client.post("/api/v1/messages/", {"content": content}, format="json")
    assert response.status_code == 202
    return Message.objects.get(id=response.json()["reply"]["id"])


def test_a_reply_finished_with_no_page_open_is_notified(live, user):
    reply = _send_over_api(user, "What is a tide?")
    assert _task_finished(reply.task_id) == "SUCCESS"

    (notification,) = Notification.objects.filter(user=user, kind="reply_finished")
    assert notification.level == "success" and "What is a tide" in notification.title
    assert notification.url == f"/?c={reply.conversation_id}"
    assert notification.body.startswith("Echo: What is a tide?")
    assert notification.email_status == "skipped"  # reply_finished: not e-mailed by default
    _settle(user)


def test_a_reply_finished_with_a_page_open_is_not_notified(live, ready, user, session_cookie):
    ws = ready(session_cookie(user))  # a page open (any page: the socket is on every page)
    ws.send(json.dumps({"type": "message.send", "content": "Seen live"}))
    reply_id = None
    while True:
        event = json.loads(ws.recv(timeout=20))
        if event["type"] == "message.created":
            reply_id = event["reply"]["id"]
        if event["type"] == "reply.done":
            break
    assert _task_finished(Message.objects.get(id=reply_id).task_id) == "SUCCESS"
    assert not Notification.objects.filter(user=user).exists()

    ws.close()  # the page is closed: the next reply is notified
    deadline = time.monotonic() + 10
    reply = _send_over_api(user, "After closing")
    _task_finished(reply.task_id)
    while not Notification.objects.filter(user=user).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Notification.objects.filter(user=user, kind="reply_finished").count() == 1
    _settle(user)


def test_a_failed_reply_fails_its_task_with_the_reason(live, glm_server, user):
    glm_server.fail_next(10, status=500, code="500")
    reply = _send_over_api(user, "will this work")

    assert _task_finished(reply.task_id) == "FAILURE"
    client = APIClient()
    client.force_authenticate(user)
    task = client.get(f"/api/v1/tasks/{reply.task_id}/").json()
    reply.refresh_from_db()
    assert reply.status == "failed"
    assert task["state"] == "FAILURE" and task["error"] == reply.error
    assert "temporarily unavailable" in task["error"]
    (notification,) = Notification.objects.filter(user=user, kind="reply_finished")
    assert notification.level == "error" and notification.body == reply.error
    assert not DeadLetter.objects.filter(task_id=reply.task_id).exists()  # the user's retry is
    # "regenerate"
