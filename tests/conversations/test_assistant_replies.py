"""Replies in a conversation with an assistant, generated in this process against the GLM test
server (real zhipuai SDK, and the OpenAI-compatible path over httpx), with real retrieval over
Milvus Lite and the local embedding model. What the model was sent is read from the test
server's request log."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import TestCase

from assistants.models import Assistant
from assistants.services import assistant_create, assistant_update
from conversations.models import Conversation, Message
from conversations.services import (
    ReplySettings,
    message_send,
    reply_generate,
    reply_regenerate,
    reply_token_ceiling,
)
from knowledge.models import KnowledgeBase
from knowledge.services import document_vectorize, documents_upload
from openspark.core.errors import ApplicationError, NotFound
from tests.factories import UserFactory, plan
from throttling.models import TokenUsage

pytestmark = pytest.mark.django_db

QUESTION = "How many vacation days do employees get"


@pytest.fixture
def owner(db):
    return UserFactory(plan=plan("pro"))


def chat_calls(server) -> list:
    return [r.json for r in server.requests_to("/chat/completions")]


def ask(user, content=QUESTION, **kwargs):
    _question, reply, _task = message_send(user=user, content=content, **kwargs)
    status = reply_generate(message_id=reply.id)
    reply.refresh_from_db()
    return status, reply


def ingest(base, user, name: str, text: str):
    # The writes' on-commit work (the base's cache scope bump) runs as it would once the
    # request's transaction commits; the test's own transaction never commits.
    with TestCase.captureOnCommitCallbacks(execute=True):
        [(document, task_id)] = documents_upload(
            knowledge_base=base,
            user=user,
            files=[SimpleUploadedFile(name, text.encode(), content_type="text/markdown")],
        )
        assert document_vectorize(document_id=document.id, task_id=task_id) == "ready"


def test_reply_uses_the_assistants_prompt_model_and_parameters(owner, glm):
    assistant = assistant_create(
        user=owner,
        name="Terse",
        system_prompt="You are Terse. Answer in one sentence.",
        provider="zhipuai",
        model="glm-4-flash",
        temperature=0.3,
        max_tokens=200,
    )
    status, reply = ask(owner, assistant_id=assistant.id)
    assert status == "completed"
    [sent] = chat_calls(glm)
    assert sent["model"] == "glm-4-flash"
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 200
    assert sent["messages"][0] == {
        "role": "system",
        "content": "You are Terse. Answer in one sentence.",
    }
    assert (reply.provider, reply.model) == ("zhipuai", "glm-4-flash")
    assert Conversation.objects.get(id=reply.conversation_id).assistant_id == assistant.id


def test_the_default_assistant_is_todays_behaviour(user, glm, settings):
    status, reply = ask(user)
    assert status == "completed"
    [sent] = chat_calls(glm)
    assert sent["model"] == settings.GLM_MODEL and "temperature" not in sent
    assert sent["messages"][0]["content"] == settings.CHAT_SYSTEM_PROMPT
    assert Conversation.objects.get(id=reply.conversation_id).assistant_id is None


def test_an_openai_compatible_assistant_reaches_that_server(owner, glm, settings):
    settings.OPENAI_COMPAT_BASE_URL = glm.openai_base_url
    settings.OPENAI_COMPAT_MODELS = ["glm-4-9b-local"]
    assistant = assistant_create(
        user=owner, name="Local", provider="openai_compatible", model="glm-4-9b-local"
    )
    status, reply = ask(owner, assistant_id=assistant.id)
    assert status == "completed"
    [request] = glm.requests_to("/v1/chat/completions")
    assert request.json["model"] == "glm-4-9b-local"
    assert (reply.provider, reply.model) == ("openai_compatible", "glm-4-9b-local")


def test_a_model_no_longer_served_fails_the_reply_readably(owner, glm, settings):
    settings.GLM_MODELS = ["glm-4-air"]
    assistant = assistant_create(user=owner, name="Air", provider="zhipuai", model="glm-4-air")
    settings.GLM_MODELS = []  # the operator removed it after the assistant was saved
    status, reply = ask(owner, assistant_id=assistant.id)
    assert status == Message.Status.FAILED and reply.error_code == "provider_not_configured"
    assert chat_calls(glm) == []


def test_the_reservation_uses_the_assistants_max_tokens(owner, glm):
    assistant = assistant_create(
        user=owner, name="Short", system_prompt="Be brief.", max_tokens=150
    )
    _question, reply, _task = message_send(user=owner, content=QUESTION, assistant_id=assistant.id)
    expected = reply_token_ceiling(
        question=QUESTION,
        with_sources=False,
        reply_settings=ReplySettings(system_prompt="Be brief.", max_tokens=150),
    )
    assert reply.reserved_tokens == expected
    assert TokenUsage.objects.get(user=owner).reserved_tokens == expected
    _q, default_reply, _t = message_send(user=owner, content=QUESTION)
    assert default_reply.reserved_tokens > expected + 3000  # the default cap is 4095
    # The reply is capped at what it reserved for.
    reply_generate(message_id=reply.id)
    assert chat_calls(glm)[0]["max_tokens"] == 150


def test_sources_only_answers_the_fallback_without_a_model_call(owner, glm, milvus_lite):
    empty = KnowledgeBase.objects.create(owner=owner, name="Empty")
    assistant = assistant_create(
        user=owner,
        name="Strict",
        knowledge_base_ids=[empty.id],
        sources_only=True,
        fallback_message="Sorry, my documents do not cover that.",
    )
    status, reply = ask(owner, assistant_id=assistant.id)
    assert status == "completed"
    assert reply.content == "Sorry, my documents do not cover that."
    assert reply.provider == "fallback" and reply.citations == []
    assert chat_calls(glm) == []
    assert (reply.prompt_tokens, reply.completion_tokens) == (0, 0)
    usage = TokenUsage.objects.get(user=owner)
    assert (usage.total_tokens, usage.reserved_tokens) == (0, 0)

    # With a relevant passage the model answers, told to keep to its sources.
    ingest(empty, owner, "leave.md", "# Leave\n\nEmployees get 25 vacation days per year.")
    status, reply = ask(owner, assistant_id=assistant.id)
    assert status == "completed" and reply.provider == "zhipuai"
    [sent] = chat_calls(glm)
    system = sent["messages"][0]["content"]
    assert "Answer only from the numbered sources" in system
    assert "Sorry, my documents do not cover that." in system
    assert "25 vacation days" in system
    assert [c["document_title"] for c in reply.citations] == ["leave.md"]


def test_an_assistant_lends_its_bases_and_nothing_else(owner, glm, milvus_lite):
    lent = KnowledgeBase.objects.create(owner=owner, name="Lent")
    kept = KnowledgeBase.objects.create(owner=owner, name="Kept")
    ingest(lent, owner, "lent.md", "Employees get 25 vacation days per year.")
    ingest(kept, owner, "kept.md", "Vacation days for employees are secret: 99.")
    assistant = assistant_create(
        user=owner, name="HR", knowledge_base_ids=[lent.id], visibility="everyone"
    )
    stranger = UserFactory()

    # The stranger cannot name the base...
    with pytest.raises(NotFound):
        message_send(user=stranger, content=QUESTION, knowledge_base_ids=[lent.id])
    # ...but the assistant answers them from it, and only from it.
    status, reply = ask(stranger, assistant_id=assistant.id)
    assert status == "completed"
    assert {c["document_title"] for c in reply.citations} == {"lent.md"}
    system = chat_calls(glm)[0]["messages"][0]["content"]
    assert "25 vacation days" in system and "secret" not in system

    # Unshared: the stranger's conversation can no longer use it.
    assistant_update(user=owner, assistant_id=assistant.id, visibility="private")
    with pytest.raises(ApplicationError) as refused:
        message_send(user=stranger, content="again", conversation_id=reply.conversation_id)
    assert refused.value.status_code == 403


def test_a_base_shared_only_with_the_owner_is_not_lent(owner, glm, milvus_lite):
    other = UserFactory()
    shared = KnowledgeBase.objects.create(owner=other, name="Shared", visibility="shared")
    shared.shared_with.add(owner)
    ingest(shared, other, "shared.md", "Employees get 25 vacation days per year.")
    assistant = assistant_create(user=owner, name="Mine", knowledge_base_ids=[shared.id])
    # Made everyone's behind the checks' back (as an admin's bulk edit could).
    Assistant.objects.filter(id=assistant.id).update(visibility="everyone")

    _status, own_reply = ask(owner, assistant_id=assistant.id)
    assert own_reply.citations  # the owner reads it
    _status, reply = ask(UserFactory(), assistant_id=assistant.id)
    assert reply.citations == []  # not the owner's to lend


def test_starting_with_an_assistant_one_may_not_use_creates_nothing(owner, user, glm):
    private = assistant_create(user=owner, name="Private")
    with pytest.raises(NotFound):
        message_send(user=user, content=QUESTION, assistant_id=private.id)
    assert not Conversation.objects.filter(owner=user).exists()


def test_a_conversation_keeps_its_assistant(owner, glm):
    first = assistant_create(user=owner, name="First")
    second = assistant_create(user=owner, name="Second")
    question, _reply, _task = message_send(user=owner, content=QUESTION, assistant_id=first.id)
    Message.objects.filter(role="assistant").update(status="completed")
    with pytest.raises(ApplicationError) as refused:
        message_send(
            user=owner,
            content="next",
            conversation_id=question.conversation_id,
            assistant_id=second.id,
        )
    assert refused.value.details == {"assistant_id": ["differs_from_conversation"]}
    message_send(user=owner, content="next", conversation_id=question.conversation_id)
    assert Conversation.objects.get(id=question.conversation_id).assistant_id == first.id


def test_regenerate_keeps_the_assistant(owner, glm):
    assistant = assistant_create(user=owner, name="Poet", system_prompt="Answer in verse.")
    _status, first = ask(owner, assistant_id=assistant.id)
    reply, _task = reply_regenerate(user=owner, message_id=first.id)
    assert reply_generate(message_id=reply.id) == "completed"
    prompts = [c["messages"][0]["content"] for c in chat_calls(glm)]
    assert prompts == ["Answer in verse."] * 2  # the first reply, then the regenerated one


def test_a_queued_reply_whose_assistant_was_unshared_fails_readably(owner, glm):
    assistant = assistant_create(user=owner, name="Shared", visibility="everyone")
    user = UserFactory()
    _question, reply, _task = message_send(user=user, content=QUESTION, assistant_id=assistant.id)
    assistant_update(user=owner, assistant_id=assistant.id, visibility="private")
    assert reply_generate(message_id=reply.id) == Message.Status.FAILED
    reply.refresh_from_db()
    assert reply.error_code == "assistant_unavailable" and reply.error
    assert chat_calls(glm) == []
    assert TokenUsage.objects.get(user=user).reserved_tokens == 0  # settled


def test_the_assistants_relevance_threshold_decides_what_is_relevant(owner, glm, milvus_lite):
    base = KnowledgeBase.objects.create(owner=owner, name="Canteen")
    ingest(base, owner, "canteen.md", "The cafeteria serves lunch at noon.")  # off-topic
    lenient = assistant_create(user=owner, name="Lenient", knowledge_base_ids=[base.id],
                               sources_only=True)  # fmt: skip
    strict = assistant_create(user=owner, name="Strict", knowledge_base_ids=[base.id],
                              sources_only=True, score_threshold=0.6)  # fmt: skip

    # The bases' threshold (0.0) lets a passage found by meaning through: the model answers.
    _status, reply = ask(owner, assistant_id=lenient.id)
    assert reply.provider == "zhipuai" and reply.citations
    calls = len(chat_calls(glm))
    # Above the assistant's threshold there is nothing: the fallback, no model call.
    _status, reply = ask(owner, assistant_id=strict.id)
    assert reply.provider == "fallback" and reply.citations == []
    assert len(chat_calls(glm)) == calls
