"""The admin's metrics page in real Chromium: Chart.js from /static/ draws every chart, and the
page asks nothing of any other host."""

import pytest

from tests.conftest import PASSWORD
from tests.factories import UserFactory
from tests.ui.conftest import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_metrics_page_draws_its_charts(page, asgi_server):
    staff = UserFactory(is_staff=True, is_superuser=True)
    hosts = set()
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    login(page, staff.username, PASSWORD)
    for _ in range(3):  # something to draw in the cache chart
        page.goto("/api/v1/me/")
    page.goto("/admin/metrics/")
    page.wait_for_function("() => window.Chart && Chart.getChart('chart-cache')")
    drawn = page.evaluate(
        "() => ['chart-requests', 'chart-refused', 'chart-cache', 'chart-queues']"
        ".filter((id) => Chart.getChart(id))"
    )
    assert drawn == ["chart-requests", "chart-refused", "chart-cache", "chart-queues"]
    assert page.errors == []
    assert hosts == {asgi_server.url.split("/")[2]}
    screenshot(page, "admin-metrics")
