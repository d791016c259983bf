"""The model server (the GLM test server, spoken to by the real zhipuai SDK) misbehaving under
the running product (uvicorn + the chat worker): a 429 or a stall before the first token is
retried and the user gets the normal reply; a provider that keeps failing, an error event,
a stall or a dropped connection mid-stream end the reply `failed` with a readable reason and
the text already shown kept; a slow model is only slow. Every time the next message is
answered normally, with nothing restarted. The in-process versions (exact error codes, retry
counts) are tests/conversations/test_task.py."""

import pytest

from openspark.llm.testserver import reply_text
from tests.faults.conftest import fault_client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _answer(question: str) -> str:
    return reply_text([{"role": "user", "content": question}])


def _ask(api, question: str, timeout: float = 60) -> dict:
    reply = api.send_message(question)
    return api.settle_reply(reply["id"], timeout=timeout)


@pytest.fixture
def api(chat_asgi, chat_worker, glm_server, user):
    client = fault_client(chat_asgi.url, user)
    yield client
    # Service is back without a restart: the fault is spent, the next message is answered.
    glm_server.reset()
    after = _ask(client, "are you back")
    assert (after["status"], after["content"]) == ("completed", _answer("are you back"))
    client.close()


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda glm: glm.fail_next(1, status=429, code="1302"), id="429-once"),
        pytest.param(lambda glm: glm.fail_next(1, status=500, code="500"), id="500-once"),
        pytest.param(lambda glm: glm.stall_next(8), id="silent-past-the-timeout-once"),
        pytest.param(lambda glm: setattr(glm, "first_token_delay", 2.0), id="slow-first-token"),
        pytest.param(lambda glm: setattr(glm, "token_delay", 0.15), id="slow-tokens"),
    ],
)
def test_a_passing_fault_before_the_first_token_gives_the_normal_reply(api, glm_server, fault):
    fault(glm_server)
    reply = _ask(api, "what is a proton")
    assert (reply["status"], reply["content"], reply["error"]) == (
        "completed",
        _answer("what is a proton"),
        None,
    )


@pytest.mark.parametrize(
    ("fault", "code", "partial"),
    [
        pytest.param(
            lambda glm: glm.fail_next(2, status=429, code="1302"),
            "provider_rate_limited",
            "",
            id="429-every-attempt",
        ),
        pytest.param(
            lambda glm: glm.fail_next(2, status=500, code="500"),
            "provider_unavailable",
            "",
            id="500-every-attempt",
        ),
        pytest.param(
            lambda glm: glm.error_mid_stream(after_tokens=3, code="1234"),
            "provider_unavailable",
            "Echo: what is ",
            id="error-event-mid-stream",
        ),
        pytest.param(
            lambda glm: glm.drop_mid_stream(after_tokens=3),
            "provider_unavailable",
            "Echo: what is ",
            id="connection-dropped-mid-stream",
        ),
        pytest.param(
            lambda glm: glm.stall_next(8, after_tokens=3),
            "provider_timeout",
            "Echo: what is ",
            id="silent-mid-stream-past-the-timeout",
        ),
    ],
)
def test_a_lasting_fault_fails_the_reply_with_a_reason(api, glm_server, fault, code, partial):
    fault(glm_server)
    reply = _ask(api, "what is a neutron")
    assert reply["status"] == "failed", reply
    assert reply["error_code"] == code, reply
    assert reply["error"] and "Traceback" not in reply["error"]
    assert reply["content"] == partial  # what the reader already saw is kept, nothing glued on
