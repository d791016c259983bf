"""The GLM test server itself: the behaviours other test suites and the benchmark rely on."""

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from openspark.llm.base import Delta
from openspark.llm.testserver import (
    FIRST_TOKEN_DELAY_HEADER,
    TOKEN_DELAY_HEADER,
    GLMTestServer,
    embedding_vector,
    reply_text,
    tokenize,
)
from openspark.llm.zhipu import ZhipuChatProvider

from .conftest import TEST_KEY

REPO = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def chat_body(content, **extra):
    return {"model": "glm-4", "messages": [{"role": "user", "content": content}], **extra}


def test_reply_is_a_function_of_the_last_user_message():
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "whatever"},
        {"role": "user", "content": "  second   question  "},
    ]
    assert reply_text(messages) == (
        "Echo: second question. This is a deterministic reply from the GLM test server."
    )
    tokens = tokenize(reply_text([{"role": "user", "content": "你好 world"}]))
    assert tokens[:4] == ["Echo: ", "你", "好 ", "world. "]


def test_tokens_directive_sets_the_reply_length(zhipu):
    events = list(zhipu.stream([{"role": "user", "content": "bench [[tokens:57]]"}]))

    deltas = [e for e in events if isinstance(e, Delta)]
    assert len(deltas) == 57
    assert events[-1].usage.completion_tokens == 57
    assert "".join(d.text for d in deltas).startswith("Echo: bench. This is")


def test_first_token_and_token_delays_can_be_set_per_request(glm_server):
    headers = {**AUTH, FIRST_TOKEN_DELAY_HEADER: "0.3", TOKEN_DELAY_HEADER: "0.05"}
    started = time.monotonic()
    arrivals = []
    with httpx.stream(
        "POST",
        glm_server.base_url + "/chat/completions",
        json=chat_body("one two three", stream=True),
        headers=headers,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - started)

    assert arrivals[0] >= 0.3
    # 13 tokens at 0.05 s after the first: the stream is really spread out in time.
    assert arrivals[-1] - arrivals[0] >= 0.5
    assert response.headers["content-type"].startswith("text/event-stream")


def test_many_concurrent_streams_are_served_in_parallel(glm_server):
    glm_server.first_token_delay = 0.1
    glm_server.token_delay = 0.02
    provider = ZhipuChatProvider(api_key=TEST_KEY, base_url=glm_server.base_url, timeout=10)

    def one(i):
        events = provider.stream([{"role": "user", "content": f"stream {i}"}])
        return "".join(e.text for e in events if isinstance(e, Delta))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=100) as pool:
        replies = list(pool.map(one, range(100)))
    elapsed = time.monotonic() - started

    assert replies[42] == (
        "Echo: stream 42. This is a deterministic reply from the GLM test server."
    )
    assert len(set(replies)) == 100
    # One stream takes ~0.35 s; one hundred in sequence would take ~35 s.
    assert elapsed < 5
    provider.close()


def test_auth_header_is_required(glm_server):
    response = httpx.post(glm_server.base_url + "/chat/completions", json=chat_body("x"))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "1001"


def test_requests_are_recorded(glm_server):
    httpx.post(
        glm_server.base_url + "/embeddings",
        json={"input": "x", "model": "embedding-2"},
        headers=AUTH,
    )

    (request,) = glm_server.requests
    assert request.method == "POST"
    assert request.path == "/api/paas/v4/embeddings"
    assert request.headers["Authorization"] == f"Bearer {TEST_KEY}"
    assert request.json == {"input": "x", "model": "embedding-2"}
    assert glm_server.requests_to("/embeddings") == [request]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"input": ["x"] * 65, "model": "embedding-3"}, "1214"),
        ({"input": ["x"], "model": "embedding-3", "dimensions": 100}, "1214"),
        ({"input": ["x"], "model": "embedding-2", "dimensions": 256}, "1214"),
        ({"input": [], "model": "embedding-3"}, "1214"),
        ({"input": ["x"], "model": "embedding-9"}, "1211"),
        ({"input": ["字" * 3100], "model": "embedding-3"}, "1214"),
    ],
)
def test_embedding_limits_are_enforced(glm_server, body, code):
    response = httpx.post(glm_server.base_url + "/embeddings", json=body, headers=AUTH)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_embedding_3_defaults_to_2048_dimensions(glm_server):
    response = httpx.post(
        glm_server.base_url + "/embeddings",
        json={"input": ["a", "b"], "model": "embedding-3"},
        headers=AUTH,
    )

    data = response.json()["data"]
    assert [(d["index"], len(d["embedding"])) for d in data] == [(0, 2048), (1, 2048)]


def test_embedding_delay_paces_each_answer_until_reset(glm_server):
    glm_server.embedding_delay = 0.3
    body = {"input": ["pace"], "model": "embedding-3"}
    started = time.monotonic()
    response = httpx.post(glm_server.base_url + "/embeddings", json=body, headers=AUTH)
    assert response.status_code == 200 and time.monotonic() - started >= 0.3

    glm_server.reset()
    assert glm_server.embedding_delay == 0.0


def test_empty_feature_text_still_gets_a_unit_vector():
    assert embedding_vector("!!!", 256)[0] == 1.0


def test_fail_next_counts_down_then_recovers(glm_server):
    glm_server.fail_next(2, status=503, code="500")
    url = glm_server.base_url + "/chat/completions"

    statuses = [httpx.post(url, json=chat_body("x"), headers=AUTH).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]


def test_drop_mid_stream_closes_the_connection_with_the_reply_unfinished(glm_server):
    glm_server.drop_mid_stream(after_tokens=2)
    url = glm_server.base_url + "/chat/completions"
    received = []

    body = chat_body("one two three", stream=True)
    with (
        pytest.raises(httpx.RemoteProtocolError),  # the body ends before its last chunk
        httpx.stream("POST", url, json=body, headers=AUTH) as response,
    ):
        for line in response.iter_lines():
            received.append(line)

    assert sum(line.startswith("data: {") for line in received) == 2
    assert not any("[DONE]" in line or "error" in line for line in received)
    again = httpx.post(url, json=chat_body("one two three", stream=True), headers=AUTH)
    assert again.status_code == 200 and "[DONE]" in again.text  # only the next one drops


def test_embedding_delay_slows_embeddings_only(glm_server):
    glm_server.embedding_delay = 0.3
    started = time.monotonic()
    response = httpx.post(
        glm_server.base_url + "/embeddings",
        json={"model": "embedding-3", "input": ["a"], "dimensions": 256},
        headers=AUTH,
    )
    assert response.status_code == 200 and time.monotonic() - started >= 0.3
    glm_server.reset()
    assert glm_server.embedding_delay == 0.0


def test_unknown_paths_and_health(glm_server):
    assert httpx.post(glm_server.url + "/api/paas/v4/nope", json={}).status_code == 404
    assert httpx.get(glm_server.url + "/health").json() == {"status": "ok"}


def test_stop_drops_stalled_requests_at_once():
    server = GLMTestServer().start()
    server.stall_next(30)
    outcome = []

    def stalled_call():
        try:
            httpx.post(
                server.base_url + "/chat/completions", json=chat_body("x"), headers=AUTH, timeout=30
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=stalled_call, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()

    server.stop()
    thread.join(timeout=5)

    assert time.monotonic() - started < 2
    assert [type(e) for e in outcome] == [httpx.RemoteProtocolError]


def _start(command, env):
    """Start a server command; return the process and the URL it printed first."""
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = process.stdout.readline()
    prefix = "GLM test server listening on "
    if not line.startswith(prefix):
        process.kill()
        pytest.fail(f"the server did not start: {line!r} {process.communicate()[1]}")
    return process, line.removeprefix(prefix).strip()


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "openspark.llm.testserver"],
        [sys.executable, "manage.py", "glm_testserver"],
    ],
    ids=["module", "manage.py"],
)
def test_command_line_server_answers_the_sdk(command):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "openspark.settings.local"}
    process, url = _start(
        [*command, "--port", "0", "--first-token-delay", "0", "--token-delay", "0"], env
    )
    try:
        provider = ZhipuChatProvider(api_key=TEST_KEY, base_url=url + "/api/paas/v4", timeout=5)
        assert provider.complete([{"role": "user", "content": "cli"}])[0].startswith("Echo: cli.")
    finally:
        process.terminate()
        process.wait(timeout=10)
