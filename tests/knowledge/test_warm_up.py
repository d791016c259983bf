"""A worker loads the local embedding model when it starts (setting on), so the first upload
does not wait for torch: in its own process for a threads pool, in each child for a prefork
pool (whose main process runs no task and stays small)."""

import re
import time

import pytest

from tests.live import start_celery_worker, subprocess_env


@pytest.mark.parametrize("pool", ["threads", "prefork"])
@pytest.mark.django_db(transaction=True)
def test_worker_start_warms_the_local_embedder(live_logs, milvus_lite, pool):
    env = subprocess_env(KNOWLEDGE_WARM_EMBEDDER_ON_WORKER_START="1", KNOWLEDGE_EMBEDDER="local")
    worker = start_celery_worker(
        live_logs, env=env, concurrency=1, pool=pool, queues=["ostest-warm-only"]
    )
    try:
        deadline = time.monotonic() + 120
        while "Loading the local embedding model" not in worker.log(tail=None):
            assert time.monotonic() < deadline, worker.log()
            assert worker.process.poll() is None, worker.log()
            time.sleep(0.2)
        time.sleep(1)  # a second load, if any, would have started by now
        loaders = re.findall(r"INFO/(\w+)-?\d*\] Loading the local embedding", worker.log(None))
        assert loaders == ["MainProcess" if pool == "threads" else "ForkPoolWorker"]
    finally:
        worker.stop()
