"""Notifications pushed live through the real ASGI server: every open socket of the user
hears `notification.created` (and `notification.read`), another user's sockets do not."""

from __future__ import annotations

import contextlib
import json

import pytest
from django.conf import settings
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from openspark.core.services import notification_mark_read, notification_send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def _cookie(user) -> str:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


@pytest.fixture
def open_socket(asgi_server):
    with contextlib.ExitStack() as stack:

        def open_(user) -> ClientConnection:
            url = asgi_server.url.replace("http://", "ws://") + "/ws/chat/"
            ws = stack.enter_context(
                connect(
                    url,
                    origin=asgi_server.url,
                    proxy=None,
                    additional_headers={"Cookie": _cookie(user)},
                )
            )
            assert json.loads(ws.recv(timeout=15))["type"] == "ready"
            return ws

        yield open_


def _next(ws: ClientConnection, event_type: str, timeout: float = 10) -> dict:
    while True:
        event = json.loads(ws.recv(timeout=timeout))
        if event["type"] == event_type:
            return event


def _silent(ws: ClientConnection, timeout: float = 1.5) -> bool:
    try:
        ws.recv(timeout=timeout)
    except TimeoutError:
        return True
    except ConnectionClosed:
        return True
    return False


def test_push_reaches_every_socket_of_the_user_and_no_one_else(open_socket, user, other_user):
    tab_one, tab_two, stranger = open_socket(user), open_socket(user), open_socket(other_user)

    notification = notification_send(user=user, title="Document ready", url="/knowledge/?kb=1")

    for ws in (tab_one, tab_two):
        event = _next(ws, "notification.created")
        assert event["notification"]["id"] == notification.id
        assert event["notification"]["title"] == "Document ready"
        assert event["notification"]["url"] == "/knowledge/?kb=1"
        assert event["unread_count"] == 1
    assert _silent(stranger)

    notification_mark_read(user=user, notification_id=notification.id)
    for ws in (tab_one, tab_two):
        assert _next(ws, "notification.read")["unread_count"] == 0
    assert _silent(stranger)
