"""The whole pipeline through real processes: uvicorn (ASGI), a Celery worker, Redis, the GLM
test server behind the real zhipuai SDK, and real websocket / HTTP clients."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection

from accounts.services import api_key_create
from openspark.llm.testserver import reply_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def recv(ws: ClientConnection, timeout: float = 15) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def recv_until(ws: ClientConnection, types: set[str], timeout: float = 20) -> list[dict]:
    """Every event up to and including the first whose type is in `types`."""
    events = []
    deadline = time.monotonic() + timeout
    while True:
        events.append(recv(ws, max(0.1, deadline - time.monotonic())))
        if events[-1]["type"] in types:
            return events


def deltas_of(events: list[dict], reply_id: int) -> list[dict]:
    return [e for e in events if e["type"] == "reply.delta" and e["message_id"] == reply_id]


def assert_in_order(deltas: list[dict], first_seq: int = 1) -> None:
    assert [d["seq"] for d in deltas] == list(range(first_seq, first_seq + len(deltas)))


def send(ws: ClientConnection, content: str, **fields) -> dict:
    ws.send(json.dumps({"type": "message.send", "content": content, **fields}))
    (created,) = recv_until(ws, {"message.created"})[-1:]
    return created


def sse_text(server, reply_id: int, headers: dict) -> tuple[str, list[str]]:
    """The reply read as server-sent events: its text and the event names, in order."""
    text, names = [], []
    url = f"{server.url}/api/v1/messages/{reply_id}/stream"
    with httpx.stream("GET", url, headers=headers, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                names.append(event)
            elif line.startswith("data: ") and event == "delta":
                text.append(json.loads(line.removeprefix("data: "))["delta"])
            elif line.startswith("data: ") and event in ("done", "error"):
                return "".join(text), names
    raise AssertionError("the stream ended without done/error")


def test_two_sockets_sse_and_rest_see_the_same_reply(live, ready, user, session_cookie):
    cookie = session_cookie(user)
    expected = reply_text([{"role": "user", "content": "[[tokens:60]] Tell me about tides"}])
    first = ready(cookie)
    created = send(first, "[[tokens:60]] Tell me about tides", client_id="tab-1")
    assert created["client_id"] == "tab-1" and created["reply"]["status"] == "pending"
    conversation_id, reply_id = created["conversation_id"], created["reply"]["id"]

    # A second tab joins once the reply has begun, and so does an SSE reader (API key).
    early = recv_until(first, {"reply.delta"})
    second = ready(cookie)
    second.send(json.dumps({"type": "conversation.join", "conversation_id": conversation_id}))
    _, raw_key = api_key_create(user=user, name="sse")
    sse_result: dict = {}

    def read_sse() -> None:
        auth = {"Authorization": f"Bearer {raw_key}"}
        sse_result["text"], sse_result["names"] = sse_text(live, reply_id, auth)

    sse = threading.Thread(target=read_sse)
    sse.start()

    events_first = early + recv_until(first, {"reply.done", "reply.error"})
    events_second = recv_until(second, {"reply.done", "reply.error"})
    sse.join(20)

    joined = events_second[0]
    assert joined["type"] == "conversation.joined" and joined["running"] == [reply_id]
    for events in (events_first, events_second):
        deltas = deltas_of(events, reply_id)
        assert_in_order(deltas)
        done = events[-1]
        assert done["type"] == "reply.done" and done["message"]["status"] == "completed"
        assert "".join(d["delta"] for d in deltas) == done["message"]["content"] == expected
    # Batching: 60 tokens at 20 ms arrive in fewer, larger deltas.
    assert 5 < len(deltas_of(events_first, reply_id)) < 60
    assert sse_result["text"] == expected
    assert sse_result["names"][-1] == "done" and set(sse_result["names"]) == {"delta", "done"}

    rest = httpx.get(f"{live.url}/api/v1/messages/{reply_id}/", headers={"Cookie": cookie})
    body = rest.json()
    assert body["status"] == "completed" and body["content"] == expected
    assert body["usage"]["completion_tokens"] == 60
    # The title follows from the first exchange (conversation.updated, and over REST).
    title_event = recv_until(first, {"conversation.updated"}, timeout=10)[-1]
    assert title_event["conversation"]["title"]
    conversation = httpx.get(
        f"{live.url}/api/v1/conversations/{conversation_id}/", headers={"Cookie": cookie}
    ).json()
    assert conversation["title"] == title_event["conversation"]["title"]
    # SSE after the end still gives the whole reply, from the start.
    assert sse_text(live, reply_id, {"Cookie": cookie})[0] == expected


def test_a_socket_that_drops_mid_reply_rejoins_and_gets_the_rest(live, ready, user, session_cookie):
    cookie = session_cookie(user)
    ws = ready(cookie)
    created = send(ws, "[[tokens:80]] a long story")
    conversation_id, reply_id = created["conversation_id"], created["reply"]["id"]
    before = []
    while len(before) < 3:
        before += deltas_of(recv_until(ws, {"reply.delta"}), reply_id)
    ws.close()  # the tab loses its connection
    time.sleep(0.3)  # deltas keep coming meanwhile

    again = ready(cookie)
    again.send(
        json.dumps(
            {
                "type": "conversation.join",
                "conversation_id": conversation_id,
                "last_seq": {str(reply_id): before[-1]["seq"]},
            }
        )
    )
    after = recv_until(again, {"reply.done"})
    rest = deltas_of(after, reply_id)

    assert_in_order(before)
    assert_in_order(rest, first_seq=before[-1]["seq"] + 1)
    text = "".join(d["delta"] for d in before + rest)
    assert text == after[-1]["message"]["content"]
    assert text == reply_text([{"role": "user", "content": "[[tokens:80]] a long story"}])


def test_stop_ends_the_reply_as_stopped(live, ready, user, session_cookie):
    cookie = session_cookie(user)
    ws = ready(cookie)
    created = send(ws, "[[tokens:400]] do not finish this")
    reply_id = created["reply"]["id"]
    events = recv_until(ws, {"reply.delta"})
    ws.send(json.dumps({"type": "message.stop", "message_id": reply_id}))
    events += recv_until(ws, {"reply.done"}, timeout=10)

    done = events[-1]["message"]
    assert done["status"] == "stopped"
    deltas = deltas_of(events, reply_id)
    assert_in_order(deltas)
    assert "".join(d["delta"] for d in deltas) == done["content"]
    assert 0 < done["usage"]["completion_tokens"] < 400
    rest = httpx.get(f"{live.url}/api/v1/messages/{reply_id}/", headers={"Cookie": cookie})
    assert rest.json()["status"] == "stopped" and rest.json()["content"] == done["content"]


def test_a_reply_failing_after_retries_reaches_the_socket(
    live, ready, glm_server, user, session_cookie
):
    cookie = session_cookie(user)
    ws = ready(cookie)
    # More failures than the worker's attempts (2); the fixture clears what is left.
    glm_server.fail_next(10, status=500, code="500")
    created = send(ws, "will this work")

    error = recv_until(ws, {"reply.error", "reply.done"})[-1]

    assert error["type"] == "reply.error"
    assert error["message_id"] == created["reply"]["id"]
    assert error["code"] == "provider_unavailable"
    assert "temporarily unavailable" in error["message"]
    url = f"{live.url}/api/v1/messages/{created['reply']['id']}/"
    body = httpx.get(url, headers={"Cookie": cookie}).json()
    assert body["status"] == "failed"
    assert (body["error_code"], body["error"]) == (error["code"], error["message"])


def test_refusals_follow_the_contract(live, ready, ws_open, user, other_user, session_cookie):
    # Unauthenticated: accepted, then closed with 4401.
    anonymous = ws_open(None)
    with pytest.raises(ConnectionClosed) as closed:
        anonymous.recv(timeout=5)
    assert closed.value.rcvd.code == 4401
    # A foreign origin is refused at the handshake.
    with pytest.raises(InvalidStatus):
        ws_open(session_cookie(user), origin="http://evil.example")

    theirs = ready(session_cookie(other_user))
    secret = send(theirs, "[[tokens:30]] my secret plan")
    ws = ready(session_cookie(user))
    frames = [
        b"\x00binary",
        "{not json",
        "[1, 2]",
        json.dumps({"no": "type"}),
        json.dumps({"type": "nonsense"}),
        json.dumps({"type": "message.send"}),
        json.dumps({"type": "message.send", "content": "hi", "conversation_id": "x"}),
        json.dumps({"type": "conversation.join", "conversation_id": secret["conversation_id"]}),
        json.dumps(
            {"type": "message.send", "content": "hi", "conversation_id": secret["conversation_id"]}
        ),
        json.dumps({"type": "message.stop", "message_id": secret["reply"]["id"]}),
        json.dumps({"type": "conversation.join", "conversation_id": 1, "last_seq": {"x": 1}}),
    ]
    codes = []
    for frame in frames:
        ws.send(frame)
        event = recv(ws, 5)
        assert event["type"] == "error", (frame, event)
        assert "secret" not in json.dumps(event)
        codes.append(event["code"])
    assert codes == [
        "invalid_frame",
        "invalid_json",
        "invalid_frame",
        "invalid_frame",
        "unknown_type",
        "validation_error",
        "validation_error",
        "not_found",
        "not_found",
        "not_found",
        "validation_error",
    ]
    # Still open and useful, and none of the other user's reply reached this socket.
    created = send(ws, "still here?")
    events = recv_until(ws, {"reply.done"})
    assert all(e.get("message_id") != secret["reply"]["id"] for e in events)
    assert events[-1]["message"]["id"] == created["reply"]["id"]
    # Their reply was not stopped by our attempt.
    done = recv_until(theirs, {"reply.done"})[-1]["message"]
    assert done["status"] == "completed"


def test_an_idle_socket_stays_open(live, ready, user, session_cookie):
    """The channel layer waits for events in 5 s blocking reads: a Redis client timing out
    reads at 5 s too killed a socket left idle that long (a tab nobody types in)."""
    ws = ready(session_cookie(user))
    time.sleep(6)
    ws.send(json.dumps({"type": "conversation.leave", "conversation_id": 1}))
    assert recv(ws)["type"] == "conversation.left"
