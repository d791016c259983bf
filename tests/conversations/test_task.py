"""generate_ai_response's body, in this process, against the GLM test server through the real
zhipuai SDK, with the real Redis reply log and channel group."""

import asyncio
import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import realtime
from conversations.models import Message
from conversations.services import conversation_title_generate, message_send, reply_generate
from openspark.llm.testserver import FIXED_SENTENCE, tokenize
from throttling.models import TokenUsage

pytestmark = pytest.mark.django_db

QUESTION = "How do tides work"
ANSWER = f"Echo: {QUESTION}. {FIXED_SENTENCE}"
ANSWER_TOKENS = len(tokenize(ANSWER))


def send(user, content=QUESTION, **kwargs):
    return message_send(user=user, content=content, **kwargs)


def log_entries(message_id):
    entries, exists = asyncio.run(realtime.reply_log_read(message_id=message_id))
    assert exists
    return entries


def test_reply_streams_in_order_and_is_saved_with_usage(user, glm, listen):
    question, reply, task_id = send(user)
    listener = listen(question.conversation_id)

    assert reply_generate(message_id=reply.id) == "completed"

    events = listener.collect(until="reply.done")
    deltas = [e for e in events if e["type"] == "reply.delta"]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert "".join(d["delta"] for d in deltas) == ANSWER
    done = events[-1]["message"]
    assert done["status"] == "completed"
    assert done["content"] == ANSWER

    reply.refresh_from_db()
    assert reply.content == ANSWER
    assert reply.last_seq == len(deltas)
    assert reply.task_id == task_id
    assert (reply.provider, reply.model) == ("zhipuai", "glm-4")
    assert reply.completion_tokens == ANSWER_TOKENS and reply.prompt_tokens > 0
    assert reply.started_at and reply.first_token_at and reply.finished_at
    assert reply.timings["total_ms"] >= reply.timings["first_token_ms"] >= 0
    usage = TokenUsage.objects.get(user=user)
    assert (usage.prompt_tokens, usage.completion_tokens) == (reply.prompt_tokens, ANSWER_TOKENS)
    # The log holds the same batches, then the end mark.
    entries = log_entries(reply.id)
    assert [e.delta for e in entries[:-1]] == [d["delta"] for d in deltas]
    assert entries[-1].end == "completed"
    # The model got the system prompt and the question.
    sent = glm.requests_to("/chat/completions")[0].json["messages"]
    assert sent[0]["role"] == "system" and sent[-1] == {"role": "user", "content": QUESTION}


def test_deltas_are_batched(user, glm, settings):
    settings.CHAT_DELTA_BATCH_SECONDS = 0.2
    glm.token_delay = 0.02
    _question, reply, _ = send(user, content="[[tokens:30]] batch me")

    reply_generate(message_id=reply.id)

    entries = log_entries(reply.id)[:-1]
    # 30 tokens over ~0.6 s: the first alone, then roughly one batch per 0.2 s.
    assert len(entries[0].delta.split()) == 1
    assert 3 <= len(entries) <= 8
    reply.refresh_from_db()
    assert "".join(e.delta for e in entries) == reply.content
    assert reply.completion_tokens == 30


def test_a_slow_send_gathers_the_tokens_that_arrive_meanwhile(user, glm, settings, monkeypatch):
    """The window is counted from the end of a send: sends slower than the window must not
    turn every later token into a batch (and a send) of its own."""
    settings.CHAT_DELTA_BATCH_SECONDS = 0.05
    glm.token_delay = 0.01
    send_batch = realtime.reply_batch_send

    def slow_send(**kwargs):
        time.sleep(0.15)
        return send_batch(**kwargs)

    monkeypatch.setattr(realtime, "reply_batch_send", slow_send)
    _question, reply, _ = send(user, content="[[tokens:40]] slow sends")

    reply_generate(message_id=reply.id)

    entries = log_entries(reply.id)[:-1]
    # 40 tokens over ~0.4 s and 0.15 s per send: a handful of batches, not ~40.
    assert len(entries) <= 10
    reply.refresh_from_db()
    assert "".join(e.delta for e in entries) == reply.content
    assert reply.completion_tokens == 40


def test_batch_window_grows_with_the_replies_streaming_in_the_process(settings, monkeypatch):
    from conversations import services

    settings.CHAT_DELTA_BATCH_SECONDS = 0.05
    settings.CHAT_DELTA_BATCH_MAX_SECONDS = 0.25
    for streaming, window in [(0, 0.05), (25, 0.05), (50, 0.1), (100, 0.2), (400, 0.25)]:
        monkeypatch.setattr(services._streaming, "value", streaming)
        assert services.batch_window() == pytest.approx(window)


def test_checkpoint_interval_grows_with_the_replies_streaming_in_the_process(settings, monkeypatch):
    from conversations import services

    settings.CHAT_CHECKPOINT_SECONDS = 1.0
    settings.CHAT_CHECKPOINT_MAX_SECONDS = 10.0
    for streaming, interval in [(0, 1.0), (25, 1.0), (50, 2.0), (100, 4.0), (400, 10.0)]:
        monkeypatch.setattr(services._streaming, "value", streaming)
        assert services.checkpoint_interval() == pytest.approx(interval)


def test_history_window_is_sent_and_title_is_generated(user, glm):
    first, reply1, _ = send(user, content="First question")
    reply_generate(message_id=reply1.id)
    assert conversation_title_generate(conversation_id=first.conversation_id)
    first.conversation.refresh_from_db()
    # The test server echoes the title prompt; what matters is the cleaned, short result.
    assert first.conversation.title and len(first.conversation.title) <= 60

    _second, reply2, _ = send(
        user, content="Second question", conversation_id=first.conversation_id
    )
    reply_generate(message_id=reply2.id)

    messages = glm.requests_to("/chat/completions")[-1].json["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "First question"
    assert messages[2]["content"].startswith("Echo: First question.")


def test_rate_limited_then_success(user, glm):
    glm.fail_next(1, status=429, code="1302")
    _question, reply, _ = send(user)

    assert reply_generate(message_id=reply.id) == "completed"

    reply.refresh_from_db()
    assert reply.content == ANSWER
    assert len(glm.requests_to("/chat/completions")) == 2


def test_server_error_until_failure_saves_a_readable_error(user, glm, listen):
    glm.fail_next(5, status=500, code="500")
    question, reply, _ = send(user)
    listener = listen(question.conversation_id)

    assert reply_generate(message_id=reply.id) == "failed"

    reply.refresh_from_db()
    assert reply.status == "failed"
    assert reply.error_code == "provider_unavailable"
    assert "temporarily unavailable" in reply.error
    (event,) = listener.collect(until="reply.error")
    assert event["type"] == "reply.error"
    assert event["message_id"] == reply.id
    assert (event["code"], event["message"]) == (reply.error_code, reply.error)
    assert len(glm.requests_to("/chat/completions")) == 2  # LLM_RETRY_MAX_ATTEMPTS
    assert not TokenUsage.objects.filter(user=user, completion_tokens__gt=0).exists()


def test_mid_stream_error_keeps_the_partial_text_and_fails(user, glm):
    glm.error_mid_stream(after_tokens=3, code="1234")
    _question, reply, _ = send(user)

    assert reply_generate(message_id=reply.id) == "failed"

    reply.refresh_from_db()
    # Not retried: text was already shown, a second answer must not be glued to it.
    assert len(glm.requests_to("/chat/completions")) == 1
    assert reply.content == "Echo: How do "
    assert reply.error_code == "provider_unavailable"
    assert log_entries(reply.id)[-1].end == "failed"


def test_timeout_then_success(user, glm, settings):
    settings.LLM_REQUEST_TIMEOUT = 0.5
    glm.stall_next(3)
    _question, reply, _ = send(user)

    assert reply_generate(message_id=reply.id) == "completed"

    reply.refresh_from_db()
    assert reply.content == ANSWER


def test_timeout_every_time_fails_with_a_readable_error(user, glm, settings):
    settings.LLM_REQUEST_TIMEOUT = 0.3
    glm.stall_next(3, times=2)
    _question, reply, _ = send(user)

    assert reply_generate(message_id=reply.id) == "failed"

    reply.refresh_from_db()
    assert reply.error_code == "provider_timeout"
    assert "took too long" in reply.error


def test_stop_request_ends_the_reply_as_stopped(user, glm, listen):
    glm.token_delay = 0.05
    question, reply, _ = send(user, content="[[tokens:200]] long answer")
    listener = listen(question.conversation_id)
    seen: list[dict] = []

    def stop_after_first_delta():
        seen.extend(listener.collect(until="reply.delta"))
        # What reply_stop does for a streaming reply (its DB read would not see this test's
        # uncommitted rows from another thread; the API tests cover the service itself).
        realtime.reply_stop_request(message_id=reply.id)

    stopper = threading.Thread(target=stop_after_first_delta)
    stopper.start()
    assert reply_generate(message_id=reply.id) == "stopped"
    stopper.join(5)

    reply.refresh_from_db()
    assert reply.status == "stopped"
    assert seen[-1]["type"] == "reply.delta"
    assert 0 < len(reply.content.split()) < 20
    assert reply.completion_tokens > 0  # estimated: the provider never reported usage
    assert len(glm.requests_to("/chat/completions")) == 1
    done = listener.collect(until="reply.done")[-1]
    assert done["message"]["status"] == "stopped"
    assert done["message"]["content"] == reply.content


def test_redelivered_task_does_nothing_twice(user, glm):
    _question, reply, _ = send(user)
    assert reply_generate(message_id=reply.id) == "completed"
    requests = len(glm.requests)

    with CaptureQueriesContext(connection) as queries:
        assert reply_generate(message_id=reply.id) == "skipped"
    assert len(queries) == 1
    assert len(glm.requests) == requests


def test_task_redelivered_after_a_lost_worker_fails_the_reply(user, glm, listen):
    question, reply, _ = send(user)
    # The first worker claimed it and died: status streaming, no lease held.
    Message.objects.filter(id=reply.id).update(status="streaming", content="half an ans")
    listener = listen(question.conversation_id)

    assert reply_generate(message_id=reply.id) == "failed"

    reply.refresh_from_db()
    assert reply.error_code == "interrupted"
    assert listener.collect(until="reply.error")[-1]["type"] == "reply.error"
    assert glm.requests == []


def test_a_reply_held_by_another_worker_is_skipped(user, glm):
    _question, reply, _ = send(user)
    assert realtime.reply_lease_acquire(message_id=reply.id)

    assert reply_generate(message_id=reply.id) == "skipped"

    reply.refresh_from_db()
    assert reply.status == "pending"
    realtime.reply_lease_release(message_id=reply.id)


def test_offline_provider_says_so_and_never_claims_to_be_glm(user, offline):
    question, reply, _ = send(user)

    assert reply_generate(message_id=reply.id) == "completed"

    reply.refresh_from_db()
    assert reply.content.startswith("Offline mode")
    assert "GLM" not in reply.content
    assert (reply.provider, reply.model) == ("offline", "offline")
    assert conversation_title_generate(conversation_id=question.conversation_id) == (
        "How do tides work"
    )
