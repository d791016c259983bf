"""A worker loads the local embedding model when it starts (setting on), so the first upload
does not wait for torch."""

import time

import pytest

from tests.live import start_celery_worker, subprocess_env


@pytest.mark.django_db(transaction=True)
def test_worker_start_warms_the_local_embedder(live_logs, milvus_lite):
    env = subprocess_env(KNOWLEDGE_WARM_EMBEDDER_ON_WORKER_START="1", KNOWLEDGE_EMBEDDER="local")
    worker = start_celery_worker(live_logs, env=env, concurrency=1, queues=["ostest-warm-only"])
    try:
        deadline = time.monotonic() + 120
        while "Loading SentenceTransformer model" not in worker.log(tail=None):
            assert time.monotonic() < deadline, worker.log()
            assert worker.process.poll() is None, worker.log()
            time.sleep(0.2)
    finally:
        worker.stop()
