"""The shared answer cache must not tell a user that someone else asked the same question: an
answer replayed from another user's cached answer reaches the socket, the API and the user's
token count exactly as a fresh answer does (docs/security/chat.md). Through the live ASGI
server, Celery worker and GLM test server."""

from __future__ import annotations

import httpx
import pytest

from tests.conversations.test_e2e import recv_until, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

QUESTION = "[[tokens:30]] What do the tides depend on?"
# What a user sees of a reply, besides ids and timestamps.
SEEN = ("status", "content", "citations", "usage", "provider", "model", "error_code", "error")


def model_streams(glm_server) -> int:
    """Streamed completions the model served (titles are asked for without streaming)."""
    return sum(1 for r in glm_server.requests_to("/chat/completions") if r.json.get("stream"))


def ask(ws) -> list[dict]:
    """The reply's events, then the conversation's title (its own model call)."""
    send(ws, QUESTION)
    events = recv_until(ws, {"reply.done", "reply.error"})
    recv_until(ws, {"conversation.updated"})
    return events


def test_an_answer_from_another_users_cache_looks_fresh(
    live, glm_server, ready, user, other_user, session_cookie
):
    glm_server.first_token_delay = 0.4
    glm_server.token_delay = 0.02
    cookies = session_cookie(user), session_cookie(other_user)
    fresh_events = ask(ready(cookies[0]))
    streams = model_streams(glm_server)

    shared_events = ask(ready(cookies[1]))

    assert model_streams(glm_server) == streams  # the path under test: a replay of the first
    fresh, shared = fresh_events[-1]["message"], shared_events[-1]["message"]
    assert fresh["status"] == "completed" and fresh["usage"]["completion_tokens"] == 30
    assert {k: shared[k] for k in SEEN} == {k: fresh[k] for k in SEEN}
    # Streamed the same way: deltas in order, then the end, nothing else.
    for events in (fresh_events, shared_events):
        deltas = [e for e in events if e["type"] == "reply.delta"]
        assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
        assert len(deltas) > 3 and [e["type"] for e in events[len(deltas) :]] == ["reply.done"]
    # At the model's pace: 0.4 s to the first token, 30 tokens 20 ms apart.
    for message in (fresh, shared):
        timings = message["timings"]
        assert timings["first_token_ms"] - timings["queue_ms"] >= 400, timings
        assert timings["total_ms"] - timings["queue_ms"] >= 900, timings
    # Charged alike: the replayed answer costs what the first one did (titles included).
    used = [
        httpx.get(f"{live.url}/api/v1/me/", headers={"Cookie": cookie}, timeout=10).json()[
            "tokens"
        ]["used_this_month"]
        for cookie in cookies
    ]
    assert used[0] == used[1] > 30
