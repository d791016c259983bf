"""`assistant_id` over REST: a conversation is started with an assistant and remembers it."""

import pytest

from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


def test_create_a_conversation_with_an_assistant(pro_client, pro_user, make_assistant):
    assistant = make_assistant(pro_user)
    created = pro_client.post(
        "/api/v1/conversations/", {"assistant_id": assistant.id}, format="json"
    )
    assert created.status_code == 201 and created.json()["assistant_id"] == assistant.id
    url = f"/api/v1/conversations/{created.json()['id']}/"
    assert pro_client.get(url).json()["assistant_id"] == assistant.id
    listed = pro_client.get("/api/v1/conversations/").json()["results"]
    assert [c["assistant_id"] for c in listed] == [assistant.id]
    default = pro_client.post("/api/v1/conversations/", {}, format="json")
    assert default.json()["assistant_id"] is None


def test_messages_create_the_conversation_with_the_assistant(
    pro_client, pro_user, make_assistant, settings
):
    settings.CHAT_TASK_QUEUE = "ostest-unconsumed"
    assistant = make_assistant(pro_user)
    sent = pro_client.post(
        "/api/v1/messages/", {"content": "hello", "assistant_id": assistant.id}, format="json"
    )
    assert sent.status_code == 202
    conversation_id = sent.json()["message"]["conversation_id"]
    assert Conversation.objects.get(id=conversation_id).assistant_id == assistant.id
    # Naming another assistant for an existing conversation is refused, not ignored.
    Message.objects.filter(role="assistant").update(status="completed")
    other = make_assistant(pro_user, name="Other")
    refused = pro_client.post(
        "/api/v1/messages/",
        {"content": "next", "conversation_id": conversation_id, "assistant_id": other.id},
        format="json",
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["details"] == {"assistant_id": ["differs_from_conversation"]}


def test_another_users_private_assistant_is_404_and_creates_nothing(
    auth_client, user, pro_user, make_assistant
):
    private = make_assistant(pro_user, name="Private")
    for url in ("/api/v1/conversations/", "/api/v1/messages/"):
        response = auth_client.post(
            url, {"content": "hi", "assistant_id": private.id}, format="json"
        )
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
        assert "Private" not in response.content.decode()
    assert not Conversation.objects.filter(owner=user).exists()
