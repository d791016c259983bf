"""Multiprocess metrics: the real ASGI server's /metrics adds up the samples of every process of
the machine, here a real Celery worker's task durations and failures."""

import time
import uuid

import httpx
import pytest

from openspark.celery import app as celery_app
from openspark.embedded import free_port
from tests.live import start_celery_worker, subprocess_env
from tests.prom import TOKEN_HEADER, Scrape

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TASK = "cache_warm_users"  # takes a list of user ids; an empty one is a quick success


def _scrape(server) -> Scrape:
    response = httpx.get(f"{server.url}/metrics", headers=TOKEN_HEADER, timeout=30)
    assert response.status_code == 200, response.text[:300]
    return Scrape(response.text)


def test_the_web_server_reports_the_workers_tasks(asgi_server, celery_worker):
    before = _scrape(asgi_server)

    assert httpx.get(f"{asgi_server.url}/healthz", timeout=10).status_code == 200
    ok = celery_app.send_task(TASK, args=[[]])
    failed = celery_app.send_task(TASK, args=[[], "unexpected"])  # TypeError in the worker
    assert ok.get(timeout=60) == 0  # no users warmed
    failed.get(timeout=60, propagate=False)
    assert failed.failed()

    def delta(scrape, name, **labels):
        return scrape.value(name, **labels) - before.value(name, **labels)

    duration = "openspark_celery_task_duration_seconds_count"
    deadline = time.monotonic() + 15  # the worker records a task after storing its result
    while True:
        after = _scrape(asgi_server)
        if delta(after, duration, task=TASK) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert delta(after, duration, task=TASK, state="SUCCESS") == 1
    assert delta(after, duration, task=TASK, state="FAILURE") == 1
    assert delta(after, "openspark_celery_task_duration_seconds_sum", task=TASK) > 0
    failures = "openspark_celery_task_failures_total"
    assert delta(after, failures, task=TASK, exception="TypeError") == 1
    # The server's own process is in the same report.
    requests = "openspark_http_requests_total"
    assert delta(after, requests, method="GET", route="healthz", status="200") == 1


def test_a_worker_host_serves_its_own_metrics(tmp_path, live_logs, milvus_lite):
    """A worker on a host without a web server (METRICS_WORKER_PORT): its processes' samples
    on its own port, without the fleet-wide collectors the web servers report."""
    port = free_port()
    queue = f"ostest-metrics-worker-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(
        METRICS_WORKER_PORT=str(port),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "worker-metrics"),
    )
    worker = start_celery_worker(live_logs, env=env, queues=[queue], concurrency=2)
    try:
        assert celery_app.send_task(TASK, args=[[]], queue=queue).get(timeout=60) == 0
        deadline = time.monotonic() + 15
        while True:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            metrics = Scrape(response.text)
            count = metrics.value("openspark_celery_task_duration_seconds_count", task=TASK)
            if count == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        worker.stop()
    assert count == 1
    assert not metrics.has("openspark_queue_depth")  # the web servers report the fleet's
    assert not metrics.has("openspark_cache_hits_total")
