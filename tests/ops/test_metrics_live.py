"""Multiprocess metrics: the real ASGI server's /metrics adds up the samples of every process of
the machine, here a real Celery worker's task durations and failures."""

import time

import httpx
import pytest

from openspark.celery import app as celery_app
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
