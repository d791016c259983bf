"""The admin's metrics page: linked from the index, staff only, charts drawn by the vendored
Chart.js from /static/ (no CDN), fed with the numbers of the staff statistics."""

import json
import re
import uuid

import pytest
from django.test import Client

from openspark.celery import app as celery_app
from tests.factories import plan
from throttling.models import LayerPolicy

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_limiter_keys(settings):
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin_client_(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def _data(html: str) -> dict:
    match = re.search(r'<script id="metrics-data" type="application/json">(.*?)</script>', html)
    return json.loads(match.group(1))


def test_index_links_to_the_metrics_page(admin_client_):
    assert 'href="/admin/metrics/"' in admin_client_.get("/admin/").content.decode()


def test_page_is_staff_only(user):
    client = Client()
    client.force_login(user)
    response = client.get("/admin/metrics/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_charts_load_the_vendored_library_from_static_and_nothing_from_outside(admin_client_):
    html = admin_client_.get("/admin/metrics/").content.decode()
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', html)
    assert "/static/vendor/chart.umd.min.js" in scripts
    assert "/static/js/admin_metrics.js" in scripts
    assert all(src.startswith("/") and not src.startswith("//") for src in scripts), scripts
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for path in scripts:  # served (whitenoise), so the page can draw
        response = Client().get(path)
        assert response.status_code == 200, path
    library = b"".join(Client().get("/static/vendor/chart.umd.min.js").streaming_content)
    assert b"Chart.js v4.6.2" in library[:200]
    for canvas in ("chart-requests", "chart-refused", "chart-top-users", "chart-cache"):
        assert f'<canvas id="{canvas}"' in html


def test_page_data_are_the_staff_statistics(admin_client_, auth_client, user, settings):
    policy = LayerPolicy.objects.get(layer="plan")
    policy.algorithm = "sliding_window"
    policy.save()
    free = plan("free")
    free.requests_per_minute = 2
    free.save()
    statuses = [auth_client.get("/api/v1/me/").status_code for _ in range(5)]
    assert statuses.count(429) == 3
    queue = f"ostest-dashboard-{uuid.uuid4().hex[:8]}"
    settings.INGEST_TASK_QUEUE = queue
    celery_app.send_task("knowledge_sweep", queue=queue)
    try:
        response = admin_client_.get("/admin/metrics/")
    finally:
        with celery_app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)
    data = _data(response.content.decode())

    limiter = data["limiter"]
    assert sum(limiter["denied_by_layer"]["plan"]) == 3
    assert sum(limiter["denied"]) == 3 and sum(limiter["allowed"]) == 2
    assert limiter["top_users"] == [{"label": user.username, "denied": 3}]
    assert len(limiter["minutes"]) == 30 and re.fullmatch(r"\d\d:\d\d", limiter["minutes"][-1])
    profile = next(ns for ns in data["cache"] if ns["namespace"] == "user_profile")
    assert (profile["hits"], profile["misses"], profile["hit_ratio"]) == (1, 1, 0.5)
    assert data["queues"][queue] == 1
    html = response.content.decode()
    assert f"<td>{queue}</td><td>1</td>" in html
    assert f"<td>{user.username}</td><td>3</td>" in html


def test_page_speaks_chinese(admin_client_):
    html = admin_client_.get("/admin/metrics/", headers={"Accept-Language": "zh-hans"}).content
    html = html.decode()
    assert "指标" in html and "队列深度" in html
    strings = json.loads(
        re.search(r'<script id="metrics-i18n" type="application/json">(.*?)</script>', html).group(
            1
        )
    )
    assert strings["requests"] == "每分钟请求数"
