"""The Zhipu provider, through the real zhipuai SDK, against the GLM test server."""

import time

import pytest

from openspark.llm.base import Delta, ErrorCode, Finish, LLMError, Passage
from openspark.llm.retry import call_with_retry, stream_with_retry
from openspark.llm.zhipu import ZhipuChatProvider

from .conftest import TEST_KEY

HELLO = [{"role": "user", "content": "Hello there, GLM"}]
HELLO_REPLY = "Echo: Hello there, GLM. This is a deterministic reply from the GLM test server."


def collect(events):
    deltas, finishes = [], []
    for event in events:
        (deltas if isinstance(event, Delta) else finishes).append(event)
    return deltas, finishes


def test_complete_returns_text_and_usage(zhipu, glm_server):
    text, usage = zhipu.complete(HELLO)

    assert text == HELLO_REPLY
    assert usage.completion_tokens == 14
    assert usage.prompt_tokens == 3
    (request,) = glm_server.requests
    assert request.path == "/api/paas/v4/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert request.json["model"] == "glm-4"
    assert request.json["messages"] == HELLO
    assert request.json["stream"] is False


def test_stream_yields_deltas_then_one_finish_with_usage(zhipu, glm_server):
    deltas, finishes = collect(zhipu.stream(HELLO, temperature=0.3, max_tokens=100))

    assert "".join(d.text for d in deltas) == HELLO_REPLY
    assert [d.text for d in deltas[:3]] == ["Echo: ", "Hello ", "there, "]
    assert finishes == [Finish(finish_reason="stop", usage=finishes[0].usage)]
    assert finishes[0].usage.completion_tokens == len(deltas) == 14
    body = glm_server.requests[0].json
    assert body["stream"] is True
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 100


def test_stream_cut_by_max_tokens_finishes_with_length(zhipu):
    deltas, finishes = collect(zhipu.stream(HELLO, max_tokens=4))

    assert "".join(d.text for d in deltas) == "Echo: Hello there, GLM. "
    assert finishes[0].finish_reason == "length"


def test_passages_become_numbered_sources_in_the_system_prompt(zhipu, glm_server):
    passages = [
        Passage(
            index=1,
            document_id=7,
            document_title="Leave policy",
            chunk_id=70,
            text="Staff get 20 days of leave.",
            score=0.9,
        ),
        Passage(
            index=2,
            document_id=8,
            document_title="Travel",
            chunk_id=80,
            text="Book trains in advance.",
            score=0.5,
        ),
    ]
    messages = [{"role": "system", "content": "You are OpenSpark."}, *HELLO]

    text, _ = zhipu.complete(messages, passages=passages)

    assert text.endswith("Sources: [1] [2].")
    sent = glm_server.requests[0].json["messages"]
    assert len(sent) == 2
    assert sent[0]["content"].startswith("You are OpenSpark.\n\n")
    assert "[1] Leave policy\nStaff get 20 days of leave." in sent[0]["content"]
    assert "[2] Travel\nBook trains in advance." in sent[0]["content"]
    assert messages[0]["content"] == "You are OpenSpark."  # the caller's list is not modified


def test_rate_limit_then_success_is_retried_once(zhipu, glm_server, fast_policy):
    glm_server.fail_next(1, status=429, code="1302")

    deltas, finishes = collect(stream_with_retry(zhipu, HELLO, policy=fast_policy))

    assert "".join(d.text for d in deltas) == HELLO_REPLY
    assert len(finishes) == 1
    assert len(glm_server.requests) == 2
    assert len(fast_policy.sleep.calls) == 1


def test_server_errors_give_up_after_max_attempts_with_a_readable_error(
    zhipu, glm_server, fast_policy
):
    glm_server.fail_next(10, status=500, code="500")

    with pytest.raises(LLMError) as caught:
        list(stream_with_retry(zhipu, HELLO, policy=fast_policy))

    assert caught.value.code == ErrorCode.UNAVAILABLE
    assert caught.value.retryable
    assert caught.value.message == (
        "The AI service is temporarily unavailable. Please try again shortly."
    )
    assert len(glm_server.requests) == fast_policy.max_attempts == 3


def test_sdk_itself_does_not_retry(zhipu, glm_server):
    glm_server.fail_next(1, status=503, code="500")

    with pytest.raises(LLMError) as caught:
        zhipu.complete(HELLO)

    assert caught.value.code == ErrorCode.UNAVAILABLE
    assert caught.value.status == 503
    assert len(glm_server.requests) == 1


def test_error_event_mid_stream_raises_after_the_deltas_and_is_not_retried(
    zhipu, glm_server, fast_policy
):
    glm_server.error_mid_stream(after_tokens=3, code="1234")
    received = []

    with pytest.raises(LLMError) as caught:
        for event in stream_with_retry(zhipu, HELLO, policy=fast_policy):
            received.append(event)

    assert "".join(e.text for e in received) == "Echo: Hello there, "
    assert caught.value.code == ErrorCode.UNAVAILABLE
    assert caught.value.retryable  # retryable in itself, but text was already shown
    assert len(glm_server.requests) == 1
    assert fast_policy.sleep.calls == []


def test_error_event_before_any_delta_is_retried(zhipu, glm_server, fast_policy):
    glm_server.error_mid_stream(after_tokens=0, code="1234")

    deltas, _ = collect(stream_with_retry(zhipu, HELLO, policy=fast_policy))

    assert "".join(d.text for d in deltas) == HELLO_REPLY
    assert len(glm_server.requests) == 2


@pytest.mark.parametrize(
    ("status", "provider_code", "expected", "retryable"),
    [
        (429, "1302", ErrorCode.RATE_LIMITED, True),
        (429, "1113", ErrorCode.RATE_LIMITED, False),  # arrears: waiting does not help
        (400, "1301", ErrorCode.CONTENT_FILTERED, False),
        (400, "1214", ErrorCode.BAD_REQUEST, False),
        (401, "1001", ErrorCode.AUTH_FAILED, False),
        (500, "500", ErrorCode.UNAVAILABLE, True),
        (502, "9999", ErrorCode.UNAVAILABLE, True),
        (418, "9999", ErrorCode.ERROR, False),
    ],
)
def test_http_errors_are_mapped_by_status_and_zhipu_code(
    zhipu, glm_server, status, provider_code, expected, retryable
):
    glm_server.fail_next(1, status=status, code=provider_code)

    with pytest.raises(LLMError) as caught:
        zhipu.complete(HELLO)

    assert (caught.value.code, caught.value.retryable) == (expected, retryable)
    assert (caught.value.status, caught.value.provider_code) == (status, provider_code)
    assert "Error code" not in caught.value.message  # the SDK's text stays in `detail`


def test_sensitive_content_is_content_filtered_and_not_retried(zhipu, glm_server, fast_policy):
    glm_server.fail_next(1, status=400, code="1301")

    with pytest.raises(LLMError) as caught:
        call_with_retry(lambda: zhipu.complete(HELLO), policy=fast_policy)

    assert caught.value.code == ErrorCode.CONTENT_FILTERED
    assert not caught.value.retryable
    assert len(glm_server.requests) == 1


def test_stall_before_the_response_times_out_quickly(glm_server):
    glm_server.stall_next(10)
    provider = ZhipuChatProvider(api_key=TEST_KEY, base_url=glm_server.base_url, timeout=0.3)
    started = time.monotonic()

    with pytest.raises(LLMError) as caught:
        list(provider.stream(HELLO))

    assert caught.value.code == ErrorCode.TIMEOUT
    assert caught.value.retryable
    assert time.monotonic() - started < 2


def test_stall_mid_stream_times_out_after_the_deltas(glm_server):
    glm_server.stall_next(10, after_tokens=2)
    provider = ZhipuChatProvider(api_key=TEST_KEY, base_url=glm_server.base_url, timeout=0.3)
    received = []

    with pytest.raises(LLMError) as caught:
        for event in provider.stream(HELLO):
            received.append(event)

    assert [e.text for e in received] == ["Echo: ", "Hello "]
    assert caught.value.code == ErrorCode.TIMEOUT


def test_wrong_key_is_auth_failed_and_not_retried(glm_server, fast_policy):
    glm_server.api_key = "the-right-key"
    provider = ZhipuChatProvider(api_key="a-wrong-key", base_url=glm_server.base_url, timeout=5)

    with pytest.raises(LLMError) as caught:
        list(stream_with_retry(provider, HELLO, policy=fast_policy))

    assert caught.value.code == ErrorCode.AUTH_FAILED
    assert caught.value.provider_code == "1002"
    assert not caught.value.retryable
    assert "API key" in caught.value.message
    assert len(glm_server.requests) == 1


def test_unreachable_server_is_unavailable(glm_server):
    provider = ZhipuChatProvider(api_key=TEST_KEY, base_url="http://127.0.0.1:9/api/paas/v4")

    with pytest.raises(LLMError) as caught:
        provider.complete(HELLO)

    assert caught.value.code == ErrorCode.UNAVAILABLE
    assert caught.value.retryable


def test_closing_a_stream_early_releases_the_connection(glm_server):
    # With a single pooled connection, a leaked one would make the next call wait for the pool.
    provider = ZhipuChatProvider(
        api_key=TEST_KEY, base_url=glm_server.base_url, timeout=1, max_connections=1
    )
    glm_server.token_delay = 0.05
    events = provider.stream([{"role": "user", "content": "long [[tokens:200]]"}])
    assert isinstance(next(events), Delta)

    events.close()

    glm_server.token_delay = 0
    assert provider.complete(HELLO)[0] == HELLO_REPLY


def test_model_is_configurable(glm_server):
    provider = ZhipuChatProvider(
        api_key=TEST_KEY, model="glm-4-flash", base_url=glm_server.base_url
    )

    provider.complete(HELLO)

    assert glm_server.requests[0].json["model"] == "glm-4-flash"
