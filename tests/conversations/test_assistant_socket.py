"""`message.send` with `assistant_id` through the real stack: uvicorn (websocket), a Celery
worker, Redis and the GLM test server, whose request log shows what the worker sent."""

from __future__ import annotations

import json

import pytest

from assistants.services import assistant_create
from conversations.models import Conversation
from tests.conversations.test_e2e import recv, recv_until, send
from tests.factories import UserFactory, plan

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def test_message_send_with_an_assistant_streams_its_reply(live, ready, glm, session_cookie):
    owner = UserFactory(plan=plan("pro"))
    assistant = assistant_create(
        user=owner,
        name="Pirate",
        system_prompt="You are a pirate. Answer like one.",
        provider="zhipuai",
        model="glm-4-air",
        temperature=0.7,
        max_tokens=120,
        visibility="everyone",
    )
    user = UserFactory()
    ws = ready(session_cookie(user))
    created = send(ws, "Where is the treasure", assistant_id=assistant.id)
    events = recv_until(ws, {"reply.done", "reply.error"})
    done = events[-1]
    assert done["type"] == "reply.done", done
    assert done["message"]["model"] == "glm-4-air"
    assert [e for e in events if e["type"] == "reply.delta"]
    conversation = Conversation.objects.get(id=created["conversation_id"])
    assert conversation.owner_id == user.id and conversation.assistant_id == assistant.id
    [request] = glm.requests_to("/chat/completions")
    assert request.json["messages"][0]["content"] == "You are a pirate. Answer like one."
    assert (request.json["temperature"], request.json["max_tokens"]) == (0.7, 120)

    # Another user's private assistant is not found, and nothing is created.
    private = assistant_create(user=owner, name="Private")
    ws.send(json.dumps({"type": "message.send", "content": "hi", "assistant_id": private.id}))
    error = recv(ws)
    assert (error["type"], error["code"]) == ("error", "not_found")
    assert Conversation.objects.filter(owner=user).count() == 1
