"""A chat socket lives only as long as its session and its user: a logout in another tab, a
session gone from the store, a password change or a deactivation closes it with 4401 and
nothing more reaches it. Every frame type spends a rate-limit budget. Through the live ASGI
server and Celery worker, with real websocket and HTTP clients."""

from __future__ import annotations

import contextlib
import json
import time
from importlib import import_module

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from conversations.models import Conversation, Message
from tests.conversations.test_e2e import recv, recv_until, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def events_until_closed(ws: ClientConnection, timeout: float = 5) -> tuple[list[dict], int]:
    """What the socket receives until the server closes it, and the close code."""
    events = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the socket is still open; it received {events}")
            events.append(json.loads(ws.recv(timeout=remaining)))
    except TimeoutError:
        raise AssertionError(f"the socket is still open; it received {events}") from None
    except ConnectionClosed as closed:
        return events, closed.rcvd.code if closed.rcvd else 0


def send_frame(ws: ClientConnection, frame: dict) -> None:
    # The server may have closed the socket already (a logout reaches it by itself).
    with contextlib.suppress(ConnectionClosed):
        ws.send(json.dumps(frame))


def session_key_of(cookie: str) -> str:
    return cookie.split("=", 1)[1]


LEAVE = {"type": "conversation.leave", "conversation_id": 1}


def test_logout_in_another_tab_closes_the_socket(live, ready, user, session_cookie):
    cookie = session_cookie(user)
    ws = ready(cookie)
    other_browser = ready(session_cookie(user))

    # Another tab of the same browser logs out: the HTTP logout with the same session cookie.
    with httpx.Client(base_url=live.url, headers={"Cookie": cookie}, timeout=10) as tab:
        csrf = tab.get("/").cookies["csrftoken"]
        response = tab.post(
            "/accounts/logout/",
            headers={"X-CSRFToken": csrf, "Cookie": f"{cookie}; csrftoken={csrf}"},
        )
        assert response.status_code == 302
        assert tab.get("/api/v1/me/").status_code in (401, 403)

    send_frame(ws, LEAVE)
    events, code = events_until_closed(ws)
    assert code == 4401
    assert events == []  # not even the answer to the frame sent after the logout
    # The user's session in another browser is untouched.
    other_browser.send(json.dumps(LEAVE))
    assert recv(other_browser)["type"] == "conversation.left"


@pytest.mark.parametrize("cause", ["session deleted", "deactivated", "password changed"])
def test_the_next_frame_after_the_session_stopped_authenticating_closes_the_socket(
    live, ready, user, session_cookie, cause
):
    """No signal tells the socket here (writes that bypass models: a session cleared from the
    store, bulk updates): the check of the session on the next frame closes it."""
    cookie = session_cookie(user)
    ws = ready(cookie)
    ws.send(json.dumps(LEAVE))
    assert recv(ws)["type"] == "conversation.left"

    users = get_user_model().objects.filter(pk=user.pk)
    if cause == "session deleted":
        import_module(settings.SESSION_ENGINE).SessionStore(session_key_of(cookie)).delete()
    elif cause == "deactivated":
        users.update(is_active=False)
    else:
        users.update(password=make_password("a-new-password-123"))

    send_frame(ws, LEAVE)
    events, code = events_until_closed(ws)
    assert (events, code) == ([], 4401)


def test_deactivating_a_user_mid_reply_closes_their_socket(live, ready, user, session_cookie):
    ws = ready(session_cookie(user))
    created = send(ws, "[[tokens:300]] a long answer")
    recv_until(ws, {"reply.delta"})

    user.is_active = False
    user.save()  # as the admin does

    events, code = events_until_closed(ws, timeout=3)
    assert code == 4401
    assert not [e for e in events if e["type"] in ("reply.done", "reply.error")]
    # The reply itself runs to its end and is saved (and charged), unseen by the socket.
    reply = Message.objects.get(pk=created["reply"]["id"])
    deadline = time.monotonic() + 20
    while not reply.is_finished and time.monotonic() < deadline:
        time.sleep(0.2)
        reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETED and reply.completion_tokens == 300


@pytest.mark.parametrize(
    ("kind", "budget"),
    [
        ("conversation.join", 60),  # the `conversations` group (free plan)
        ("conversation.leave", 60),
        ("message.stop", 100),  # `messages` allows 120; the free plan's 100 bind first
        ("malformed", 100),  # global and plan layers only
    ],
)
def test_a_flood_of_any_frame_type_is_rate_limited(live, ready, user, session_cookie, kind, budget):
    conversation = Conversation.objects.create(owner=user)
    frames = {
        "conversation.join": json.dumps(
            {"type": "conversation.join", "conversation_id": conversation.id}
        ),
        "conversation.leave": json.dumps(LEAVE),
        "message.stop": json.dumps({"type": "message.stop", "message_id": 10**12}),
        "malformed": "{not json",
    }
    ws = ready(session_cookie(user))
    answered = 0
    # A token bucket refills a little while the flood runs: a few frames past the budget.
    for _ in range(budget + 10):
        ws.send(frames[kind])
        event = recv(ws)
        if event["type"] == "rate_limited":
            break
        assert event["type"] in ("conversation.joined", "conversation.left", "error"), event
        answered += 1
    else:
        raise AssertionError(f"{budget + 10} {kind} frames, none refused")
    assert budget <= answered <= budget + 5
    assert event["retry_after"] > 0
    assert event.get("frame_type") == (None if kind == "malformed" else kind)
