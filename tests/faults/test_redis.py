"""Redis (cache, broker, channel layer, limiter) stopped under a running product and started
again on the same port, empty (no persistence: what was queued in it is gone). A test-owned
redis-server, never the machine's. Users keep being served from the database, a message and a
document sent during the outage are accepted, and once Redis is back the beat sweeps queue them
again (their first enqueue failed) and they end `completed` / `ready`; a reply that was
streaming when Redis went away ends too. Nothing is restarted. The cache's own behaviour
(no stale reads after recovery) is tests/cache/test_redis_down.py."""

import time

import pytest

from openspark.embedded import start_redis
from openspark.llm.testserver import reply_text
from tests.faults.conftest import (
    fault_client,
    fault_logs,
    running_stack,
    stack_env,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def redis_stack(django_db_setup, tmp_path_factory, _glm_server, milvus_lite):
    data = tmp_path_factory.mktemp("fault-redis")
    redis = start_redis(data, persist=False)
    env = stack_env(_glm_server, REDIS_URL=redis.url, CACHE_REDIS_RETRY_SECONDS="0.2")
    logs = fault_logs("redis")
    with running_stack(env, logs, service=redis, redis=redis, redis_dir=data) as stack:
        yield stack


def _answer(question: str) -> str:
    return reply_text([{"role": "user", "content": question}])


def test_redis_stopped_and_restarted(redis_stack, user, glm_server):
    from conversations.models import Message

    stack = redis_stack
    api = fault_client(stack.asgi.url, user)
    base = api.create_base("Redis outage")
    assert api.settle_reply(api.send_message("before")["id"])["status"] == "completed"

    # A reply streaming when Redis goes away.
    glm_server.token_delay = 0.1
    streaming = api.send_message("[[tokens:40]] long answer")
    wait_until(
        Message.objects.filter(id=streaming["id"], status="streaming").exists, 30, "never streamed"
    )
    redis = stack.extra["redis"]
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    redis.stop()
    try:
        assert api.get("/api/v1/me/").status_code == 200
        assert api.get("/api/v1/conversations/").status_code == 200
        during = api.send_message("during the outage")
        upload = api.upload(base["id"], "gamma.txt", b"Gamma rays are photons. " * 20)
        assert upload.status_code == 202, upload.text
        (document,) = upload.json()["documents"]
        time.sleep(1)
    finally:
        stack.extra["redis"] = start_redis(stack.extra["redis_dir"], port=port, persist=False)
    glm_server.token_delay = 0.0

    # The streaming reply ends by itself: completed, or failed as interrupted (readable).
    ended = api.settle_reply(streaming["id"], timeout=60)
    assert ended["status"] in ("completed", "failed"), ended
    if ended["status"] == "failed":
        assert ended["error"], ended
    # What was accepted during the outage never reached the broker: the sweeps find it.
    time.sleep(3)  # past CHAT_PENDING_REQUEUE_SECONDS and KNOWLEDGE_STUCK_AFTER_SECONDS
    stack.beat_sends("replies_sweep")
    stack.beat_sends("knowledge_sweep")
    reply = api.settle_reply(during["id"], timeout=60)
    assert (reply["status"], reply["content"]) == ("completed", _answer("during the outage"))
    assert api.settle_document(document["id"], timeout=60)["status"] == "ready"
    after = api.settle_reply(api.send_message("after")["id"], timeout=60)
    assert (after["status"], after["content"]) == ("completed", _answer("after"))
