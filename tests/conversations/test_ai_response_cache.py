"""ai_response: an identical question with identical context and model is answered from the
cache without calling the model, replayed as the model's answer (streamed, saved and charged
alike); never across users whose readable knowledge differs; staff can turn it off per plan."""

import pytest

from conversations.models import Message
from conversations.services import message_send, reply_generate, reply_regenerate
from knowledge.models import KnowledgeBase
from throttling.models import Plan, TokenUsage

pytestmark = pytest.mark.django_db

QUESTION = "What is the boiling point of water at sea level"


def ask(user, content=QUESTION):
    _question, reply, _task = message_send(user=user, content=content)
    status = reply_generate(message_id=reply.id)
    reply.refresh_from_db()
    return status, reply


def model_calls(glm) -> int:
    return len(glm.requests_to("/chat/completions"))


def test_identical_question_is_answered_from_the_cache_and_streamed(user, glm, listen):
    _status, first = ask(user)
    calls = model_calls(glm)
    assert first.provider == "zhipuai"

    question, reply, _ = message_send(user=user, content=QUESTION)
    listener = listen(question.conversation_id)
    assert reply_generate(message_id=reply.id) == "completed"
    reply.refresh_from_db()

    assert model_calls(glm) == calls  # no model call
    assert (reply.provider, reply.model) == (first.provider, first.model)
    assert reply.content == first.content and reply.citations == first.citations
    usage = (first.prompt_tokens, first.completion_tokens)
    assert (reply.prompt_tokens, reply.completion_tokens) == usage
    events = listener.collect(until="reply.done")
    deltas = [e for e in events if e["type"] == "reply.delta"]
    assert len(deltas) > 1  # streamed in pieces, like any reply
    assert "".join(d["delta"] for d in deltas) == first.content
    assert events[-1]["message"]["provider"] == first.provider
    # Charged as the answer it stands for.
    used = TokenUsage.objects.get(user=user)
    assert (used.prompt_tokens, used.completion_tokens) == (2 * usage[0], 2 * usage[1])


def test_a_different_question_or_history_calls_the_model(user, glm):
    ask(user)
    calls = model_calls(glm)
    _status, other = ask(user, content=QUESTION + " on Mars")
    assert other.provider == "zhipuai"
    assert model_calls(glm) > calls


def test_users_with_different_readable_knowledge_never_share_answers(user, other_user, glm):
    ask(user)
    calls = model_calls(glm)
    # other_user can read a base that user cannot: their scope differs.
    KnowledgeBase.objects.create(owner=other_user, name="private notes")
    _status, reply = ask(other_user)
    assert reply.provider == "zhipuai"
    assert model_calls(glm) > calls


def test_users_with_the_same_readable_knowledge_share_answers(user, other_user, glm):
    ask(user)
    calls = model_calls(glm)
    _status, reply = ask(other_user)
    assert model_calls(glm) == calls
    assert reply.provider == "zhipuai"


def test_a_regenerated_reply_asks_the_model_again(user, glm):
    _status, first = ask(user)
    calls = model_calls(glm)
    reply, _task_id = reply_regenerate(user=user, message_id=first.id)
    assert reply_generate(message_id=reply.id) == "completed"
    assert model_calls(glm) > calls  # not the cached copy of the answer being replaced


def test_staff_can_turn_cached_answers_off_per_plan(user, glm):
    Plan.objects.filter(tier="free").update(ai_response_cache_enabled=False)
    ask(user)
    calls = model_calls(glm)
    _status, reply = ask(user)
    assert reply.provider == "zhipuai"
    assert model_calls(glm) > calls


def test_failed_replies_are_never_cached(user, glm):
    glm.fail_next(10, status=500, code="500")
    status, _failed = ask(user)
    assert status == Message.Status.FAILED
    glm.reset()
    _status, reply = ask(user)
    assert reply.provider == "zhipuai"  # nothing was cached from the failure


def test_offline_answers_are_not_cached(user, offline):
    _status, first = ask(user)
    _status, second = ask(user)
    assert first.provider == second.provider == "offline"


def test_assistants_never_share_answers_with_each_other_or_the_default(user, glm):
    from assistants.services import assistant_create, assistant_update

    plan = Plan.objects.get(tier="free")
    plan.can_create_assistants = True
    plan.save()
    # Same prompt (the default one), different parameters: only the assistant's settings
    # tell their answers apart.
    same = {
        "system_prompt": "You are OpenSpark, a helpful assistant. Answer clearly and concisely."
    }
    warm = assistant_create(user=user, name="Warm", temperature=0.9, **same)
    cold = assistant_create(user=user, name="Cold", temperature=0.1, **same)
    ask(user)
    calls = model_calls(glm)
    for assistant in (warm, cold):
        _question, reply, _task = message_send(
            user=user, content=QUESTION, assistant_id=assistant.id
        )
        assert reply_generate(message_id=reply.id) == "completed"
        calls, before = model_calls(glm), calls
        assert calls == before + 1, assistant.name  # not the default's or the other's answer

    # The same assistant again: shared.
    _question, reply, _task = message_send(user=user, content=QUESTION, assistant_id=warm.id)
    reply_generate(message_id=reply.id)
    assert model_calls(glm) == calls
    # Edited: its older answers are not its answers any more.
    assistant_update(user=user, assistant_id=warm.id, fallback_message="Nothing found.")
    _question, reply, _task = message_send(user=user, content=QUESTION, assistant_id=warm.id)
    reply_generate(message_id=reply.id)
    assert model_calls(glm) == calls + 1
