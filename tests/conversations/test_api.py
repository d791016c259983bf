"""Conversations and messages over REST: shapes, permissions, the error shape, state rules."""

import pytest

from conversations import realtime
from conversations.models import Conversation, Message
from conversations.services import message_send
from knowledge.models import KnowledgeBase
from openspark.core.models import TaskRecord
from throttling.models import TokenUsage
from throttling.selectors import month_start, plan_for_user

pytestmark = pytest.mark.django_db


def error_code(response):
    return response.json()["error"]["code"]


def test_conversation_crud_and_newest_first(auth_client, user):
    first = auth_client.post("/api/v1/conversations/", {"title": " Trip "}, format="json")
    second = auth_client.post("/api/v1/conversations/", {}, format="json")
    assert first.status_code == second.status_code == 201
    assert first.json()["title"] == "Trip"
    assert second.json()["title"] == "" and second.json()["knowledge_base_ids"] == []

    listing = auth_client.get("/api/v1/conversations/").json()
    assert listing["count"] == 2
    assert [c["id"] for c in listing["results"]] == [second.json()["id"], first.json()["id"]]

    url = f"/api/v1/conversations/{first.json()['id']}/"
    renamed = auth_client.patch(url, {"title": "Kyoto trip"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["title"] == "Kyoto trip"
    assert auth_client.get(url).json()["title"] == "Kyoto trip"
    assert auth_client.delete(url).status_code == 204
    assert error_code(auth_client.get(url)) == "not_found"


def test_knowledge_bases_attach_only_when_readable(auth_client, user, other_user):
    mine = KnowledgeBase.objects.create(owner=user, name="Mine")
    theirs = KnowledgeBase.objects.create(owner=other_user, name="Theirs")
    created = auth_client.post(
        "/api/v1/conversations/", {"knowledge_base_ids": [mine.id]}, format="json"
    )
    assert created.json()["knowledge_base_ids"] == [mine.id]

    url = f"/api/v1/conversations/{created.json()['id']}/"
    refused = auth_client.patch(url, {"knowledge_base_ids": [theirs.id]}, format="json")
    assert refused.status_code == 404
    assert "Theirs" not in refused.content.decode()
    assert auth_client.get(url).json()["knowledge_base_ids"] == [mine.id]


def test_other_users_conversations_and_messages_are_404(auth_client, other_user):
    message, reply, _ = message_send(user=other_user, content="secret plans")
    conversation_id = message.conversation_id
    for method, url in [
        ("get", f"/api/v1/conversations/{conversation_id}/"),
        ("patch", f"/api/v1/conversations/{conversation_id}/"),
        ("delete", f"/api/v1/conversations/{conversation_id}/"),
        ("get", f"/api/v1/conversations/{conversation_id}/messages/"),
        ("get", f"/api/v1/messages/{message.id}/"),
        ("post", f"/api/v1/messages/{reply.id}/stop"),
        ("post", f"/api/v1/messages/{reply.id}/regenerate"),
    ]:
        response = getattr(auth_client, method)(url, {}, format="json")
        assert response.status_code == 404, (method, url)
        assert error_code(response) == "not_found"
        assert "secret" not in response.content.decode()
    response = auth_client.post(
        f"/api/v1/messages/{reply.id}/feedback", {"rating": 1}, format="json"
    )
    assert response.status_code == 404
    sent = auth_client.post(
        "/api/v1/messages/",
        {"conversation_id": conversation_id, "content": "let me in"},
        format="json",
    )
    assert sent.status_code == 404
    assert Message.objects.filter(conversation_id=conversation_id).count() == 2


def test_send_answers_202_with_both_messages_and_a_task(auth_client, user):
    response = auth_client.post(
        "/api/v1/messages/", {"content": "  Hello there  ", "client_id": "c-1"}, format="json"
    )

    assert response.status_code == 202
    body = response.json()
    assert body["message"]["role"] == "user" and body["message"]["content"] == "Hello there"
    assert body["message"]["client_id"] == "c-1"
    reply = body["reply"]
    assert reply["role"] == "assistant" and reply["status"] == "pending"
    assert reply["reply_to_id"] == body["message"]["id"]
    assert reply["task_id"] == body["task_id"]
    assert reply["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert TaskRecord.objects.get(task_id=body["task_id"]).user == user
    assert auth_client.get(f"/api/v1/tasks/{body['task_id']}/").status_code == 200
    conversation = Conversation.objects.get(id=body["message"]["conversation_id"])
    assert conversation.owner == user

    history = auth_client.get(f"/api/v1/conversations/{conversation.id}/messages/").json()
    assert [m["role"] for m in history["results"]] == ["user", "assistant"]
    one = auth_client.get(f"/api/v1/messages/{reply['id']}/").json()
    assert one["status"] == "pending" and one["citations"] == [] and one["error"] is None

    # The same client_id again (a retry after a lost response) does not ask twice.
    again = auth_client.post(
        "/api/v1/messages/", {"content": "Hello there", "client_id": "c-1"}, format="json"
    )
    assert again.json()["reply"]["id"] == reply["id"]
    assert Message.objects.count() == 2


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"content": ""},
        {"content": "   "},
        {"content": 42, "conversation_id": "abc"},
        {"content": "x" * 8001},
        {"content": "hi", "knowledge_base_ids": "1,2"},
        {"content": "hi", "conversation_id": -3},
        ["not", "an", "object"],
    ],
)
def test_malformed_sends_are_400_in_the_error_shape(auth_client, payload):
    response = auth_client.post("/api/v1/messages/", payload, format="json")
    assert response.status_code == 400
    assert error_code(response) == "validation_error"
    assert not Message.objects.exists()


def test_broken_json_and_unauthenticated(auth_client, api_client):
    response = auth_client.post(
        "/api/v1/messages/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400 and error_code(response) == "validation_error"
    for url in ("/api/v1/conversations/", "/api/v1/messages/1/"):
        response = api_client.get(url)
        assert response.status_code == 401 and error_code(response) == "not_authenticated"


def test_one_reply_at_a_time_per_conversation(auth_client, user):
    message, _reply, _ = message_send(user=user, content="first")
    response = auth_client.post(
        "/api/v1/messages/",
        {"conversation_id": message.conversation_id, "content": "second"},
        format="json",
    )
    assert response.status_code == 409 and error_code(response) == "conflict"


def test_stop_a_queued_reply_then_regenerate(auth_client, user):
    message, reply, _ = message_send(user=user, content="question")

    stopped = auth_client.post(f"/api/v1/messages/{reply.id}/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    # Stopping again changes nothing; a user message cannot be stopped.
    assert auth_client.post(f"/api/v1/messages/{reply.id}/stop").json()["status"] == "stopped"
    assert auth_client.post(f"/api/v1/messages/{message.id}/stop").status_code == 400

    regenerated = auth_client.post(f"/api/v1/messages/{reply.id}/regenerate")
    assert regenerated.status_code == 202
    body = regenerated.json()
    assert body["message"]["id"] == message.id
    assert body["reply"]["reply_to_id"] == message.id and body["reply"]["status"] == "pending"
    # While the new reply runs, another regenerate is refused.
    assert auth_client.post(f"/api/v1/messages/{message.id}/regenerate").status_code == 409


def test_stop_a_streaming_reply_sets_the_flag_for_its_worker(auth_client, user):
    _message, reply, _ = message_send(user=user, content="question")
    Message.objects.filter(id=reply.id).update(status="streaming")
    assert realtime.reply_lease_acquire(message_id=reply.id)  # a live worker holds it
    try:
        response = auth_client.post(f"/api/v1/messages/{reply.id}/stop")
        assert response.json()["status"] == "streaming"
        assert realtime.reply_stop_requested(message_id=reply.id)
    finally:
        realtime.reply_lease_release(message_id=reply.id)


def test_stop_a_streaming_reply_whose_worker_is_gone(auth_client, user):
    _message, reply, _ = message_send(user=user, content="question")
    Message.objects.filter(id=reply.id).update(status="streaming", content="partial")

    response = auth_client.post(f"/api/v1/messages/{reply.id}/stop")

    assert response.json()["status"] == "stopped"
    assert response.json()["content"] == "partial"


def test_feedback(auth_client, user):
    message, reply, _ = message_send(user=user, content="question")
    url = f"/api/v1/messages/{reply.id}/feedback"

    response = auth_client.post(url, {"rating": -1, "comment": "too vague"}, format="json")
    assert response.status_code == 200
    assert response.json()["feedback"] == {"rating": -1, "comment": "too vague"}
    assert auth_client.post(url, {"rating": 5}, format="json").status_code == 400
    user_message_url = f"/api/v1/messages/{message.id}/feedback"
    assert auth_client.post(user_message_url, {"rating": 1}, format="json").status_code == 400


def test_schema_lists_the_chat_endpoints(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    for path in (
        "/api/v1/conversations/",
        "/api/v1/conversations/{conversation_id}/",
        "/api/v1/conversations/{conversation_id}/messages/",
        "/api/v1/messages/",
        "/api/v1/messages/{message_id}/",
        "/api/v1/messages/{message_id}/stop",
        "/api/v1/messages/{message_id}/regenerate",
        "/api/v1/messages/{message_id}/feedback",
    ):
        assert path in paths, path


def test_send_is_refused_when_the_monthly_quota_is_used_up(auth_client, user):
    quota = plan_for_user(user).monthly_token_quota
    TokenUsage.objects.create(user=user, month=month_start(), prompt_tokens=quota)

    response = auth_client.post("/api/v1/messages/", {"content": "one more"}, format="json")

    assert response.status_code == 429
    assert error_code(response) == "quota_exceeded"
    assert int(response["Retry-After"]) > 0
    assert not Message.objects.exists()
