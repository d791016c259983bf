"""The monthly token quota around replies: a reply's most tokens are reserved when it is
queued and settled when it ends, so concurrent sends cannot spend past the quota."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connections
from websockets.sync.client import connect

from accounts.services import api_key_create
from conversations import realtime
from conversations.models import Conversation, Message
from conversations.services import (
    conversation_delete,
    conversation_title_generate,
    message_send,
    replies_sweep,
    reply_generate,
    reply_regenerate,
    reply_stop,
)
from conversations.tasks import generate_ai_response
from openspark.core.errors import ApplicationError
from openspark.llm.base import estimate_tokens
from tests.chat_live import CHAT_QUEUE
from throttling.models import TokenUsage
from throttling.selectors import month_start, plan_for_user

QUESTION = "How do tides work"


def reply_ceiling(content: str = QUESTION) -> int:
    """The documented reservation of a reply without knowledge bases: the system prompt, the
    history window (at least the question) and the completion cap, all by the estimator."""
    cap = settings.CHAT_REPLY_MAX_TOKENS or getattr(settings, "CHAT_QUOTA_REPLY_TOKENS", 4095)
    return (
        estimate_tokens(settings.CHAT_SYSTEM_PROMPT)
        + max(settings.CHAT_HISTORY_TOKEN_BUDGET, estimate_tokens(content))
        + cap
    )


def usage_of(user) -> TokenUsage:
    return TokenUsage.objects.get(user=user, month=month_start())


def use(user, tokens: int) -> None:
    TokenUsage.objects.update_or_create(
        user=user, month=month_start(), defaults={"prompt_tokens": tokens}
    )


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# --- through the real ASGI server and Celery worker ------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_at_the_quota_edge_admit_only_what_fits(
    chat_worker, chat_asgi, glm_server, user
):
    quota = plan_for_user(user).monthly_token_quota
    ceiling = reply_ceiling()
    fits = 3
    used_before = quota - fits * ceiling - ceiling // 2
    use(user, used_before)
    _key, raw_key = api_key_create(user=user, name="burst")

    def send(_n: int) -> httpx.Response:
        return httpx.post(
            f"{chat_asgi.url}/api/v1/messages/",
            json={"content": QUESTION},
            headers={"Authorization": f"Bearer {raw_key}"},
            timeout=30,
        )

    # Replies hold their reservations through the burst: a reply that ended meanwhile would
    # hand back what it did not use, and room for one more send is then right.
    glm_server.first_token_delay = 8.0
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(send, range(20)))
    glm_server.first_token_delay = 0.0

    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code != 202]
    replies = Message.objects.filter(conversation__owner=user, role="assistant")
    last_accepted = max(replies.values_list("created_at", flat=True))
    ended_during_burst = replies.filter(finished_at__lt=last_accepted).count()
    assert fits <= len(accepted) <= fits + ended_during_burst, [r.status_code for r in responses]
    for response in refused:
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "quota_exceeded"
        assert {"retry_after", "resets_at", "quota", "used", "reserved", "needed"} <= set(
            error["details"]
        )
        assert int(response.headers["Retry-After"]) >= 1
    # A refused send created nothing; each accepted one holds its ceiling until it ends.
    assert Conversation.objects.filter(owner=user).count() == len(accepted)
    held = replies.exclude(status__in=Message.FINISHED).values_list("reserved_tokens", flat=True)
    assert set(held) <= {ceiling}

    # The worker streams them, settles each, then titles each conversation (also charged).
    def settled() -> bool:
        done = replies.filter(status="completed").count() == len(accepted)
        titled = not Conversation.objects.filter(owner=user, title="").exists()
        return done and titled and usage_of(user).reserved_tokens == 0

    wait_for(settled)
    usage = usage_of(user)
    charged = sum(r.prompt_tokens + r.completion_tokens for r in replies)
    assert all(r.reserved_tokens == 0 for r in replies)
    assert usage.total_tokens > used_before + charged  # the replies and the titles
    assert usage.total_tokens <= quota


@pytest.mark.django_db(transaction=True)
def test_websocket_send_beyond_the_quota_gets_quota_exceeded(chat_asgi, user, session_cookie):
    use(user, plan_for_user(user).monthly_token_quota - 10)
    url = chat_asgi.url.replace("http://", "ws://") + "/ws/chat/"
    headers = {"Cookie": session_cookie(user)}
    with connect(url, origin=chat_asgi.url, additional_headers=headers, proxy=None) as ws:
        assert json.loads(ws.recv(timeout=15))["type"] == "ready"
        frame = {"type": "message.send", "content": QUESTION, "client_id": "c-1"}
        ws.send(json.dumps(frame))
        event = json.loads(ws.recv(timeout=15))

    assert event["type"] == "error"
    assert event["code"] == "quota_exceeded"
    assert event["frame_type"] == "message.send" and event["client_id"] == "c-1"
    assert event["details"]["needed"] == reply_ceiling()
    assert event["details"]["retry_after"] >= 1
    assert not Message.objects.filter(conversation__owner=user).exists()
    assert usage_of(user).reserved_tokens == 0


# --- the worker's body in this process ---------------------------------------------------------


@pytest.mark.django_db
def test_a_reply_reserves_its_ceiling_and_settles_once(user, glm, auth_client):
    _question, reply, _task = message_send(user=user, content=QUESTION)
    assert (reply.reserved_tokens, reply.reserved_month) == (reply_ceiling(), month_start())
    assert usage_of(user).reserved_tokens == reply_ceiling()
    tokens = auth_client.get("/api/v1/me/").json()["tokens"]
    assert (tokens["used_this_month"], tokens["reserved"]) == (0, reply_ceiling())
    assert tokens["remaining"] == tokens["quota"] - reply_ceiling()

    assert reply_generate(message_id=reply.id) == "completed"
    reply.refresh_from_db()
    usage = usage_of(user)
    charged = (reply.prompt_tokens, reply.completion_tokens)
    assert reply.reserved_tokens == 0 and usage.reserved_tokens == 0
    assert (usage.prompt_tokens, usage.completion_tokens) == charged
    # The cap the reservation counted on was sent to the provider.
    body = glm.requests_to("/chat/completions")[0].json
    assert body["max_tokens"] == (settings.CHAT_REPLY_MAX_TOKENS or 4095)

    # A redelivered task settles nothing again.
    assert generate_ai_response(reply.id) == "skipped"
    assert reply_generate(message_id=reply.id) == "skipped"
    usage.refresh_from_db()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reserved_tokens) == (*charged, 0)


@pytest.mark.django_db
def test_a_send_that_does_not_fit_is_refused_and_creates_nothing(user):
    quota = plan_for_user(user).monthly_token_quota
    use(user, quota - reply_ceiling() + 1)
    with pytest.raises(ApplicationError) as refused:
        message_send(user=user, content=QUESTION)
    assert (refused.value.status_code, refused.value.code) == (429, "quota_exceeded")
    assert not Conversation.objects.exists() and not Message.objects.exists()
    assert usage_of(user).reserved_tokens == 0

    use(user, quota - reply_ceiling())  # exactly one reply's room
    message_send(user=user, content=QUESTION)
    usage = usage_of(user)
    assert usage.total_tokens + usage.reserved_tokens == quota


@pytest.mark.django_db
def test_regenerate_reserves_too(user, glm):
    question, reply, _task = message_send(user=user, content=QUESTION)
    reply_generate(message_id=reply.id)
    usage = usage_of(user)
    quota = plan_for_user(user).monthly_token_quota
    TokenUsage.objects.filter(pk=usage.pk).update(
        prompt_tokens=quota - usage.completion_tokens - reply_ceiling() + 1
    )
    with pytest.raises(ApplicationError) as refused:
        reply_regenerate(user=user, message_id=reply.id)
    assert refused.value.code == "quota_exceeded"
    assert Message.objects.filter(reply_to=question).count() == 1

    TokenUsage.objects.filter(pk=usage.pk).update(prompt_tokens=0)
    again, _task = reply_regenerate(user=user, message_id=reply.id)
    assert again.reserved_tokens == reply_ceiling()
    assert usage_of(user).reserved_tokens == reply_ceiling()


@pytest.mark.django_db
def test_a_stopped_pending_reply_releases_its_reservation(user):
    _question, reply, _task = message_send(user=user, content=QUESTION)
    reply = reply_stop(user=user, message_id=reply.id)
    assert (reply.status, reply.reserved_tokens) == ("stopped", 0)
    usage = usage_of(user)
    assert (usage.reserved_tokens, usage.total_tokens) == (0, 0)
    reply_stop(user=user, message_id=reply.id)  # stopping again settles nothing
    assert usage_of(user).reserved_tokens == 0


@pytest.mark.django_db
def test_a_stopped_streaming_reply_releases_and_charges_what_it_streamed(user, glm, listen):
    glm.token_delay = 0.05
    question, reply, _ = message_send(user=user, content="[[tokens:200]] long answer")
    listener = listen(question.conversation_id)

    def stop_after_first_delta():
        listener.collect(until="reply.delta")
        realtime.reply_stop_request(message_id=reply.id)

    stopper = threading.Thread(target=stop_after_first_delta)
    stopper.start()
    assert reply_generate(message_id=reply.id) == "stopped"
    stopper.join(5)

    reply.refresh_from_db()
    usage = usage_of(user)
    assert reply.reserved_tokens == 0 and usage.reserved_tokens == 0
    assert 0 < reply.completion_tokens < 200
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        reply.prompt_tokens,
        reply.completion_tokens,
    )


@pytest.mark.django_db
def test_a_failed_reply_releases_its_reservation(user, glm):
    glm.fail_next(5, status=500, code="500")
    _question, reply, _ = message_send(user=user, content=QUESTION)
    assert reply_generate(message_id=reply.id) == "failed"
    reply.refresh_from_db()
    usage = usage_of(user)
    assert (reply.status, reply.reserved_tokens) == ("failed", 0)
    assert (usage.reserved_tokens, usage.total_tokens) == (0, 0)  # no text, nothing charged


@pytest.mark.django_db
def test_the_sweep_releases_a_vanished_workers_reservation(user, settings):
    settings.CHAT_REPLY_LEASE_SECONDS = 30
    _question, reply, _ = message_send(user=user, content=QUESTION)
    Message.objects.filter(pk=reply.pk).update(
        status="streaming", updated_at=reply.created_at.replace(year=2000)
    )
    assert replies_sweep()["interrupted"] == 1
    reply.refresh_from_db()
    assert (reply.status, reply.reserved_tokens) == ("failed", 0)
    assert usage_of(user).reserved_tokens == 0
    assert replies_sweep()["interrupted"] == 0
    assert usage_of(user).reserved_tokens == 0


@pytest.mark.django_db
def test_deleting_a_conversation_releases_its_pending_reply(user):
    question, _reply, _ = message_send(user=user, content=QUESTION)
    conversation_delete(user=user, conversation_id=question.conversation_id)
    assert usage_of(user).reserved_tokens == 0


@pytest.fixture
def unconsumed_queue(settings):
    """Replies queued on commit go where no live worker takes them: this process runs them."""
    settings.CHAT_TASK_QUEUE = f"{CHAT_QUEUE}-unconsumed"
    yield
    redis.Redis.from_url(settings.REDIS_URL).delete(settings.CHAT_TASK_QUEUE)


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_conversation_is_deleted_mid_reply_settles_it(
    user, glm, listen, unconsumed_queue
):
    glm.token_delay = 0.05
    question, reply, _ = message_send(user=user, content="[[tokens:200]] long answer")
    listener = listen(question.conversation_id)

    def delete_after_first_delta():
        try:
            listener.collect(until="reply.delta")
            conversation_delete(user=user, conversation_id=question.conversation_id)
        finally:
            connections.close_all()

    deleter = threading.Thread(target=delete_after_first_delta)
    deleter.start()
    assert reply_generate(message_id=reply.id) == "stopped"
    deleter.join(5)

    assert not Message.objects.filter(id=reply.id).exists()
    usage = usage_of(user)
    assert usage.reserved_tokens == 0
    assert usage.completion_tokens > 0  # what it streamed before it saw the stop


@pytest.mark.django_db
def test_a_title_is_paid_from_the_quota_or_made_offline(user, glm):
    question, reply, _ = message_send(user=user, content=QUESTION)
    reply_generate(message_id=reply.id)
    quota = plan_for_user(user).monthly_token_quota
    TokenUsage.objects.filter(user=user).update(prompt_tokens=quota, completion_tokens=0)
    calls = len(glm.requests_to("/chat/completions"))

    assert conversation_title_generate(conversation_id=question.conversation_id) == QUESTION
    assert len(glm.requests_to("/chat/completions")) == calls  # no room: the offline title
    assert usage_of(user).total_tokens == quota

    Conversation.objects.filter(id=question.conversation_id).update(title="")
    TokenUsage.objects.filter(user=user).update(prompt_tokens=0)
    assert conversation_title_generate(conversation_id=question.conversation_id)
    assert len(glm.requests_to("/chat/completions")) == calls + 1
    usage = usage_of(user)
    assert usage.total_tokens > 0 and usage.reserved_tokens == 0
