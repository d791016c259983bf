"""The admin's evaluation page in real Chromium: under the Content-Security-Policy the static
module draws the history chart from the page's json_script data, without errors."""

import pytest

from knowledge.models import EvaluationModeMetrics, EvaluationRun, EvaluationSet
from knowledge.services import knowledge_base_create
from tests.conftest import PASSWORD
from tests.factories import UserFactory
from tests.ui.conftest import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _completed_run(questions, *, chunk_size: int, mrr: float) -> EvaluationRun:
    run = EvaluationRun.objects.create(
        evaluation_set=questions, status="completed", progress=100,
        settings_snapshot={"chunk_size": chunk_size, "chunk_overlap": 50, "top_k": 5,
                           "embedding_model": "local/all-MiniLM-L6-v2", "score_threshold": 0.0,
                           "documents": 3, "chunks": 9, "depth": 10},
    )  # fmt: skip
    for mode, factor in (("hybrid", 1.0), ("vector", 0.9), ("keyword", 0.6)):
        EvaluationModeMetrics.objects.create(
            run=run, mode=mode, recall_at_1=mrr * factor, recall_at_5=min(1.0, mrr * factor + 0.2),
            recall_at_10=1.0, mrr=mrr * factor, latency_p50_ms=12.0, latency_p95_ms=30.0,
        )  # fmt: skip
    return run


def test_evaluation_page_draws_the_history_chart(page, asgi_server):
    staff = UserFactory(is_staff=True, is_superuser=True)
    base = knowledge_base_create(owner=staff, name="Handbook", enforce_quota=False)
    questions = EvaluationSet.objects.create(
        knowledge_base=base, name="FAQ", filename="faq.csv", file_type="csv", question_count=3,
        questions=[{"row": 2, "question": "q", "document": "", "answer": "a"}],
    )  # fmt: skip
    _completed_run(questions, chunk_size=500, mrr=0.6)
    _completed_run(questions, chunk_size=300, mrr=0.8)
    login(page, staff.username, PASSWORD)
    page.goto(f"/admin/knowledge/knowledgebase/{base.id}/evaluate/")
    page.wait_for_function("() => window.Chart && Chart.getChart('evaluation-chart')")
    drawn = page.evaluate(
        "() => { const c = Chart.getChart('evaluation-chart'); return [c.data.labels.length,"
        " c.data.datasets.length, c.data.datasets[0].data]; }"
    )
    assert drawn == [2, 6, [0.6, 0.8]]
    assert page.errors == []
    assert page.locator(".evaluation-report").count() == 1
    screenshot(page, "admin-evaluation")
