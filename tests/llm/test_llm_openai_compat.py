"""The OpenAI-compatible provider against the test server's /v1 endpoint."""

import time

import pytest

from openspark.llm.base import Delta, ErrorCode, Finish, LLMError, Passage
from openspark.llm.openai_compat import OpenAICompatChatProvider, iter_sse_data
from openspark.llm.retry import stream_with_retry

HELLO = [{"role": "user", "content": "Hello from vLLM"}]
HELLO_REPLY = "Echo: Hello from vLLM. This is a deterministic reply from the GLM test server."


@pytest.fixture
def compat(glm_server):
    provider = OpenAICompatChatProvider(
        base_url=glm_server.openai_base_url + "/", model="glm-4-9b-chat", timeout=5
    )
    yield provider
    provider.close()


def test_stream_assembles_the_reply_and_reports_usage(compat, glm_server):
    events = list(compat.stream(HELLO, max_tokens=50))

    deltas = [e for e in events if isinstance(e, Delta)]
    assert "".join(d.text for d in deltas) == HELLO_REPLY
    assert len(deltas) == 14
    assert events[-1] == Finish(finish_reason="stop", usage=events[-1].usage)
    assert events[-1].usage.completion_tokens == 14
    assert events[-1].usage.prompt_tokens == 3
    (request,) = glm_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.json["stream_options"] == {"include_usage": True}
    assert request.json["model"] == "glm-4-9b-chat"
    assert request.json["max_tokens"] == 50
    assert "Authorization" not in request.headers


def test_complete_and_api_key(glm_server):
    glm_server.api_key = "local-secret"
    provider = OpenAICompatChatProvider(
        base_url=glm_server.openai_base_url, model="m", api_key="local-secret"
    )

    text, usage = provider.complete(HELLO)

    assert text == HELLO_REPLY
    assert usage.completion_tokens == 14
    assert glm_server.requests[0].headers["Authorization"] == "Bearer local-secret"


def test_missing_key_when_one_is_required_is_auth_failed(compat, glm_server):
    glm_server.api_key = "local-secret"

    with pytest.raises(LLMError) as caught:
        list(compat.stream(HELLO))

    assert caught.value.code == ErrorCode.AUTH_FAILED
    assert caught.value.status == 401


def test_passages_are_sent_as_sources(compat, glm_server):
    passages = [Passage(1, 1, "Handbook", 1, "Leave is 20 days.", 0.8)]

    text, _ = compat.complete(HELLO, passages=passages)

    assert text.endswith("Sources: [1].")
    assert glm_server.requests[0].json["messages"][0]["role"] == "system"


def test_rate_limit_is_retried_through_the_policy(compat, glm_server, fast_policy):
    glm_server.fail_next(1, status=429, code="1302")

    events = list(stream_with_retry(compat, HELLO, policy=fast_policy))

    assert "".join(e.text for e in events if isinstance(e, Delta)) == HELLO_REPLY
    assert len(glm_server.requests) == 2


def test_error_event_mid_stream(compat, glm_server, fast_policy):
    glm_server.error_mid_stream(after_tokens=2, code="1234")
    received = []

    with pytest.raises(LLMError) as caught:
        for event in stream_with_retry(compat, HELLO, policy=fast_policy):
            received.append(event)

    assert [e.text for e in received] == ["Echo: ", "Hello "]
    assert caught.value.code == ErrorCode.UNAVAILABLE
    assert len(glm_server.requests) == 1


def test_stall_times_out(glm_server):
    glm_server.stall_next(10)
    provider = OpenAICompatChatProvider(base_url=glm_server.openai_base_url, model="m", timeout=0.3)
    started = time.monotonic()

    with pytest.raises(LLMError) as caught:
        list(provider.stream(HELLO))

    assert caught.value.code == ErrorCode.TIMEOUT
    assert time.monotonic() - started < 2


def test_unreachable_server_is_unavailable():
    provider = OpenAICompatChatProvider(base_url="http://127.0.0.1:9/v1", model="m", timeout=2)

    with pytest.raises(LLMError) as caught:
        list(provider.stream(HELLO))

    assert caught.value.code == ErrorCode.UNAVAILABLE


def test_sse_parser_joins_multiline_data_and_skips_comments():
    lines = [": keep-alive", 'data: {"a":', "data: 1}", "", "", "data:[DONE]", ""]

    assert list(iter_sse_data(iter(lines))) == ['{"a":\n1}', "[DONE]"]
