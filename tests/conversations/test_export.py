"""GET conversations/{id}/export?format=md|json: the owner's conversation as a file, each
reply with its sources; anyone else gets the API's 404."""

import json

import pytest
from rest_framework.test import APIClient

from assistants.services import assistant_create
from conversations.models import Message
from conversations.services import message_send, reply_generate
from tests.factories import UserFactory, plan

pytestmark = pytest.mark.django_db

CITATION = {
    "index": 1,
    "document_id": 7,
    "document_title": "Leave policy.md",
    "chunk_id": 70,
    "snippet": "Employees get 25\nvacation days per year.",
    "score": 0.83,
}


@pytest.fixture
def client_for_user():
    def make(user) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def conversation(glm):
    owner = UserFactory(plan=plan("pro"))
    assistant = assistant_create(user=owner, name="HR helper", icon="book")
    question, reply, _task = message_send(
        user=owner, content="How many vacation days?", assistant_id=assistant.id
    )
    assert reply_generate(message_id=reply.id) == "completed"
    # The reply cites a source (as retrieval would have made it).
    Message.objects.filter(id=reply.id).update(citations=[CITATION])
    reply.refresh_from_db()
    assert reply.content
    return owner, question.conversation_id, reply


def url(conversation_id: int, kind: str | None = "md") -> str:
    query = f"?format={kind}" if kind else ""
    return f"/api/v1/conversations/{conversation_id}/export{query}"


def test_markdown_has_the_messages_and_a_sources_section_per_reply(conversation, client_for_user):
    owner, conversation_id, reply = conversation
    response = client_for_user(owner).get(url(conversation_id))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="conversation-{conversation_id}.md"'
    )
    text = response.content.decode()
    assert "- Assistant: HR helper" in text
    assert "## You · " in text and "How many vacation days?" in text
    assert "## Assistant · " in text and reply.content in text
    sources = text.split("### Sources", 1)[1]
    assert "1. **Leave policy.md**" in sources
    assert "> Employees get 25 vacation days per year." in sources
    # Without a format: Markdown (the same file but for the minute of its export).
    default = client_for_user(owner).get(url(conversation_id, None)).content.decode()

    def without_export_time(markdown: str) -> list[str]:
        return [line for line in markdown.splitlines() if not line.startswith("- Exported:")]

    assert without_export_time(default) == without_export_time(text)


def test_json_has_messages_citations_assistant_and_timestamps(conversation, client_for_user):
    owner, conversation_id, reply = conversation
    response = client_for_user(owner).get(url(conversation_id, "json"))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].endswith(f'conversation-{conversation_id}.json"')
    data = json.loads(response.content)
    assert data["format"] == "openspark.conversation.v1" and data["exported_at"]
    assert data["conversation"]["id"] == conversation_id
    assert data["assistant"]["name"] == "HR helper" and data["assistant"]["icon"] == "book"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    answer = data["messages"][1]
    assert answer["content"] == reply.content and answer["citations"] == [CITATION]
    assert answer["created_at"] and answer["usage"]["completion_tokens"] > 0


def test_only_the_owner_may_export(conversation, client_for_user, staff_user):
    _owner, conversation_id, _reply = conversation
    for caller in (UserFactory(), staff_user):
        for kind in ("md", "json"):
            response = client_for_user(caller).get(url(conversation_id, kind))
            assert response.status_code == 404
            assert response["Content-Type"] == "application/json"
            assert response.json()["error"]["code"] == "not_found"
    anonymous = client_for_user(None).get(url(conversation_id))
    assert anonymous.status_code == 401


def test_an_unknown_format_is_a_validation_error(conversation, client_for_user):
    owner, conversation_id, _reply = conversation
    response = client_for_user(owner).get(url(conversation_id, "pdf"))
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"format": ["invalid_choice"]}
