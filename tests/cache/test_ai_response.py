"""Cached answers: identical question + context + model + settings → the stored reply, but
never across users whose readable knowledge differs; staff switch it off per plan."""

import pytest

from conversations.selectors import ai_response_cache_enabled
from knowledge.models import KnowledgeBase
from knowledge.selectors import knowledge_base_list_readable
from openspark.core.cache import (
    ai_response_context_fingerprint,
    ai_response_get,
    ai_response_key,
    ai_response_set,
    ai_response_user_scope,
    stats_get,
)
from tests.cache.conftest import ns_stats
from tests.factories import UserFactory
from throttling.models import Plan

pytestmark = pytest.mark.django_db

QUESTION = [
    {"role": "system", "content": "You are OpenSpark."},
    {"role": "user", "content": "What is our refund policy?"},
]
CONTEXT = ai_response_context_fingerprint(chunks=[(11, "Refunds within 30 days."), (12, "…")])
SETTINGS = {"temperature": 0.7, "max_tokens": 512}


def _scope(user) -> str:
    ids = knowledge_base_list_readable(user=user).values_list("id", flat=True)
    return ai_response_user_scope(readable_knowledge_base_ids=ids)


def _key(user, **overrides) -> str:
    parts = {
        "model": "glm-4",
        "settings": SETTINGS,
        "messages": QUESTION,
        "context_fingerprint": CONTEXT,
        "user_scope": _scope(user),
    } | overrides
    return ai_response_key(**parts)


def _answer(text: str) -> dict:
    return {
        "content": text,
        "citations": [{"index": 1, "chunk_id": 11}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7},
        "pace": [[120, len(text)]],
    }


@pytest.fixture
def people():
    alice, bob, carol, dave = (UserFactory() for _ in range(4))
    KnowledgeBase.objects.create(owner=alice, name="Alice's private notes")
    KnowledgeBase.objects.create(
        owner=dave, name="Handbook", visibility=KnowledgeBase.Visibility.PUBLIC
    )
    return alice, bob, carol, dave


def test_identical_question_is_answered_from_the_cache(people):
    alice = people[0]
    assert ai_response_get(_key(alice)) is None
    ai_response_set(_key(alice), **_answer("Within 30 days [1]."))
    cached = ai_response_get(_key(alice))
    assert cached["cached"] is True
    assert cached["content"] == "Within 30 days [1]."
    assert cached["citations"] == [{"index": 1, "chunk_id": 11}]
    assert cached["usage"] == {"prompt_tokens": 30, "completion_tokens": 7}
    assert cached["pace"] == [[120, len("Within 30 days [1].")]]
    assert cached["cached_at"] is not None
    answers = ns_stats(stats_get(), "ai_response")
    assert (answers["misses"], answers["hits"], answers["sets"]) == (1, 1, 1)


def test_answers_are_never_shared_across_different_readable_knowledge(people):
    alice, bob, carol, _dave = people
    assert _scope(alice) != _scope(bob) == _scope(carol)
    ai_response_set(_key(alice), **_answer("From Alice's private notes [1]."))
    assert ai_response_get(_key(bob)) is None
    assert ai_response_get(_key(carol)) is None
    ai_response_set(_key(bob), **_answer("From the handbook [1]."))
    # Carol may read exactly what Bob may read: she shares his answer, never Alice's.
    assert ai_response_get(_key(carol))["content"] == "From the handbook [1]."
    assert ai_response_get(_key(alice))["content"] == "From Alice's private notes [1]."


def test_gaining_access_changes_the_scope(people):
    alice, bob, _carol, _dave = people
    before = _scope(bob)
    base = KnowledgeBase.objects.get(owner=alice)
    base.visibility = KnowledgeBase.Visibility.SHARED
    base.save()
    base.shared_with.add(bob)
    assert _scope(bob) != before
    assert _scope(bob) == _scope(alice)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "glm-4-flash"},
        {"settings": {**SETTINGS, "temperature": 0.2}},
        {"messages": [*QUESTION[:1], {"role": "user", "content": "What is our refund policy"}]},
        {"context_fingerprint": ai_response_context_fingerprint(chunks=[(11, "Refunds: 14d.")])},
    ],
    ids=["model", "settings", "messages", "context"],
)
def test_anything_different_is_a_different_question(people, change):
    alice = people[0]
    ai_response_set(_key(alice), **_answer("cached"))
    assert ai_response_get(_key(alice, **change)) is None


def test_key_ignores_dict_order_and_extra_message_fields(people):
    alice = people[0]
    reordered = [{"content": m["content"], "role": m["role"], "id": 5} for m in QUESTION]
    assert _key(alice, messages=reordered, settings=dict(reversed(SETTINGS.items()))) == _key(alice)


def test_staff_switch_it_off_per_plan(people, settings):
    alice = people[0]
    assert ai_response_cache_enabled(user=alice) is True
    Plan.objects.filter(tier="free").update(ai_response_cache_enabled=False)
    alice.refresh_from_db()
    assert ai_response_cache_enabled(user=alice) is False
    pro = Plan.objects.get(tier="pro")
    alice.plan = pro
    assert ai_response_cache_enabled(user=alice) is True
    settings.CACHE_ENABLED = False
    assert ai_response_cache_enabled(user=alice) is False
    ai_response_set(_key(alice), **_answer("never stored"))
    settings.CACHE_ENABLED = True
    assert ai_response_get(_key(alice)) is None
