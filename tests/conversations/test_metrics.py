"""Model-call metrics of a real reply (this process, the GLM test server through the zhipuai
SDK): time to first token, stream time, tokens as reported, and failures by code."""

import pytest
from django.test import Client

from conversations.services import message_send, reply_generate
from tests.prom import scrape

pytestmark = pytest.mark.django_db

LABELS = {"provider": "zhipuai", "model": "glm-4"}


def test_a_completed_reply_records_latency_and_tokens(user, glm):
    glm.first_token_delay = 0.3
    _question, reply, _ = message_send(user=user, content="How do tides work")
    before = scrape(Client())

    assert reply_generate(message_id=reply.id) == "completed"

    after = scrape(Client())
    reply.refresh_from_db()

    def delta(name, **labels):
        return after.value(name, **LABELS, **labels) - before.value(name, **LABELS, **labels)

    first_token = "openspark_llm_time_to_first_token_seconds"
    assert delta(f"{first_token}_count") == 1
    assert delta(f"{first_token}_bucket", le="0.25") == 0  # the server waited 0.3 s
    assert delta(f"{first_token}_bucket", le="+Inf") == 1
    assert delta("openspark_llm_stream_seconds_count", outcome="completed") == 1
    assert delta("openspark_llm_stream_seconds_sum", outcome="completed") >= 0.3
    tokens = "openspark_llm_tokens_total"
    assert delta(tokens, kind="prompt") == reply.prompt_tokens > 0
    assert delta(tokens, kind="completion") == reply.completion_tokens > 0


def test_a_failed_reply_counts_its_error_code(user, glm):
    glm.fail_next(5, status=500, code="500")
    _question, reply, _ = message_send(user=user, content="How do tides work")
    before = scrape(Client())

    assert reply_generate(message_id=reply.id) == "failed"

    after = scrape(Client())
    errors = {**LABELS, "code": "provider_unavailable"}
    assert (
        after.value("openspark_llm_errors_total", **errors)
        - before.value("openspark_llm_errors_total", **errors)
        == 1
    )
    failed = {**LABELS, "outcome": "failed"}
    count = "openspark_llm_stream_seconds_count"
    assert after.value(count, **failed) - before.value(count, **failed) == 1
    assert after.value("openspark_llm_tokens_total", **LABELS) == before.value(
        "openspark_llm_tokens_total", **LABELS
    )
