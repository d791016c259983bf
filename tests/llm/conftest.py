import os

import pytest

from openspark.llm.retry import RetryPolicy
from openspark.llm.testserver import GLMTestServer
from openspark.llm.zhipu import ZhipuChatProvider

TEST_KEY = "test-key.secret"


@pytest.fixture(scope="session", autouse=True)
def _loopback_bypasses_proxy():
    """httpx honours HTTP(S)_PROXY; the test server is on loopback and must be reached directly."""
    saved = {name: os.environ.get(name) for name in ("NO_PROXY", "no_proxy")}
    for name in saved:
        os.environ[name] = ",".join(filter(None, [saved[name], "127.0.0.1", "localhost"]))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def _glm_server():
    with GLMTestServer(port=0) as server:
        yield server


@pytest.fixture
def glm_server(_glm_server):
    """One server for the session; every test starts with no faults, no latency, empty log."""
    _glm_server.reset()
    yield _glm_server
    _glm_server.reset()


@pytest.fixture
def zhipu(glm_server):
    provider = ZhipuChatProvider(api_key=TEST_KEY, base_url=glm_server.base_url, timeout=5)
    yield provider
    provider.close()


class RecordingSleep:
    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def fast_policy():
    """Retries whose waits are recorded in `policy.sleep.calls` instead of slept."""
    return RetryPolicy(
        max_attempts=3, max_seconds=5.0, base_delay=0.01, max_delay=0.05, sleep=RecordingSleep()
    )
