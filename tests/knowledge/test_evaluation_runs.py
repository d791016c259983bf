"""Evaluation runs over a small base whose ranks are known: exact recall and MRR per mode,
misses with what came instead, progress, idempotent re-runs, readable failures, and the
conditions that refuse a start.

The base (one chunk per document) and the questions are built so the three modes disagree:
- a paraphrase with no word in common with any document: keyword search finds nothing;
- questions whose only shared word is a common one ("when", "of") found in a wrong document:
  keyword search finds only that document, and hybrid fusion, which keeps every keyword hit,
  puts it first (the vector ranking alone had the right one first, by a wide margin);
- a made-up project name with a misleading rest ("Osprey midday meal"): the vector ranking
  prefers the canteen, keyword search finds only the codename document, hybrid follows it;
- an answer string only, written in other case and spacing than the passage;
- an expected document with an answer it does not contain: missed everywhere.
The task body runs in-process here (what the worker runs); test_evaluation_worker.py sends it
through a real worker."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from knowledge.models import (
    Document,
    EvaluationModeMetrics,
    EvaluationResult,
    EvaluationRun,
    KnowledgeBase,
)
from knowledge.services import (
    EvaluationFailed,
    evaluation_run_execute,
    evaluation_run_start,
    evaluation_set_create,
    knowledge_base_create,
)
from openspark.core.errors import Conflict
from openspark.core.models import TaskRecord
from tests.knowledge.conftest import ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("embedder")]

DOCS = {
    "vpn.txt": "To reach the office network from home, open WireGuard and import the profile file.",
    "leave.txt": "Employees receive 25 days of paid vacation each calendar year.",
    "printer.txt": "The third-floor printer shows error E-4471 when its toner cartridge is empty.",
    "expenses.txt": "Submit travel receipts within 30 days to be reimbursed.",
    "parking.txt": "Staff cars may park in the underground garage after 7 pm.",
    "canteen.txt": "The canteen serves lunch from noon until two o'clock.",
    "codes.txt": "Project codenames in use this year: Kestrel, Osprey and Bluebird.",
}

# (question, document as written, answer) → expected rank in (hybrid, vector, keyword).
QUESTIONS = [
    ("How much holiday time do workers get annually?", "leave.txt", "", (1, 1, None)),
    ("When can I eat a midday meal?", "Canteen", "", (2, 1, None)),
    ("refund of business trip costs", "{expenses}", "", (2, 1, None)),
    ("Osprey midday meal", "CODES.TXT", "", (1, 2, 1)),
    ("What does error E-4471 mean?", "", "Toner  Cartridge is EMPTY", (1, 1, 1)),
    ("How many vacation days?", "leave.txt", "30 days", (None, None, None)),
]


@pytest.fixture
def office(staff_user):
    # top_k 1: chat would be given one passage, so anything below rank 1 is a miss.
    base = knowledge_base_create(owner=staff_user, name="Office", top_k=1)
    documents = {name: ingest(base, staff_user, name, text.encode()) for name, text in DOCS.items()}
    assert {d.status for d in documents.values()} == {"ready"}
    return base, documents


def _question_file(documents) -> SimpleUploadedFile:
    lines = ["question,document,answer"]
    for question, document, answer, _ranks in QUESTIONS:
        document = document.format(expenses=documents["expenses.txt"].id)
        lines.append(f'"{question}",{document},{answer}')
    return SimpleUploadedFile("office.csv", "\n".join(lines).encode())


@pytest.fixture
def office_run(office, staff_user):
    base, documents = office
    questions = evaluation_set_create(
        knowledge_base=base, user=staff_user, upload=_question_file(documents), name="Office"
    )
    run, task_id = evaluation_run_start(evaluation_set=questions, user=staff_user)
    return run, task_id, documents


def _figures(run) -> dict[str, tuple]:
    return {
        m.mode: (m.recall_at_1, m.recall_at_5, m.recall_at_10, m.mrr, m.misses)
        for m in EvaluationModeMetrics.objects.filter(run=run)
    }


def test_a_run_measures_each_mode_exactly(office_run):
    run, task_id, documents = office_run
    assert run.status == "pending" and run.progress == 0
    assert evaluation_run_execute(run_id=run.id, task_id=task_id) == "completed"
    run.refresh_from_db()
    assert run.status == "completed" and run.progress == 100 and run.error == ""
    assert run.finished_at and run.duration_seconds > 0
    assert TaskRecord.objects.get(task_id=task_id).progress == 100
    assert run.settings_snapshot == {
        "chunk_size": 500, "chunk_overlap": 50, "embedding_model": "local/all-MiniLM-L6-v2",
        "top_k": 1, "score_threshold": 0.0, "documents": 7, "chunks": 7, "depth": 10,
    }  # fmt: skip

    results = list(EvaluationResult.objects.filter(run=run).order_by("row"))
    assert [r.row for r in results] == [2, 3, 4, 5, 6, 7]
    assert [tuple(r.ranks[m] for m in ("hybrid", "vector", "keyword")) for r in results] == [
        ranks for *_q, ranks in QUESTIONS
    ]
    # recall@1, recall@5, recall@10, MRR, misses (not at rank 1, top_k being 1)
    assert _figures(run) == {
        "hybrid": (0.5, 0.8333, 0.8333, 0.6667, 3),
        "vector": (0.6667, 0.8333, 0.8333, 0.75, 2),
        "keyword": (0.3333, 0.3333, 0.3333, 0.3333, 4),
    }
    latencies = EvaluationModeMetrics.objects.filter(run=run).values_list(
        "latency_p50_ms", "latency_p95_ms"
    )
    assert all(0 < p50 <= p95 for p50, p95 in latencies)

    # Misses say what came instead, for the modes that missed only.
    by_row = {r.row: r for r in results}
    assert by_row[2].missed and set(by_row[2].retrieved) == {"keyword"}
    assert by_row[2].retrieved["keyword"] == []  # keyword search found nothing at all
    canteen = by_row[3].retrieved
    assert set(canteen) == {"hybrid", "keyword"}
    printer = documents["printer.txt"]
    assert canteen["hybrid"] == [
        {"document_id": printer.id, "document_title": "printer.txt",
         "chunk_id": printer.chunks.get().id, "snippet": DOCS["printer.txt"]},
    ]  # fmt: skip
    assert by_row[5].retrieved["vector"][0]["document_title"] == "canteen.txt"
    assert not by_row[6].missed and by_row[6].retrieved == {}
    assert by_row[6].expected_document_id is None and by_row[6].expected_answer
    assert set(by_row[7].retrieved) == {"hybrid", "vector", "keyword"}
    assert by_row[7].retrieved["vector"][0]["document_title"] == "leave.txt"  # no "30 days"
    assert by_row[4].expected_document_id == documents["expenses.txt"].id


def test_a_finished_run_is_not_run_again_and_an_interrupted_one_starts_over(office_run):
    run, task_id, _documents = office_run
    evaluation_run_execute(run_id=run.id, task_id=task_id)
    figures = _figures(run)
    result_ids = set(EvaluationResult.objects.filter(run=run).values_list("id", flat=True))

    # Delivered again (acks_late after a lost acknowledgement): nothing is redone.
    assert evaluation_run_execute(run_id=run.id, task_id=task_id) == "completed"
    assert set(EvaluationResult.objects.filter(run=run).values_list("id", flat=True)) == result_ids
    # A task that is not the run's own does nothing.
    assert evaluation_run_execute(run_id=run.id, task_id="someone-else") == "superseded"

    # A worker died mid-run: the redelivered task computes everything again, once.
    EvaluationRun.objects.filter(id=run.id).update(status="running", progress=40)
    EvaluationModeMetrics.objects.filter(run=run, mode="keyword").delete()
    assert evaluation_run_execute(run_id=run.id, task_id=task_id) == "completed"
    assert _figures(run) == figures
    assert EvaluationResult.objects.filter(run=run).count() == len(QUESTIONS)
    assert not EvaluationResult.objects.filter(id__in=result_ids).exists()
    assert evaluation_run_execute(run_id=10**9, task_id=task_id) == "missing"


def test_a_failed_run_says_why(office_run, settings):
    run, task_id, _documents = office_run
    settings.ZHIPUAI_API_KEY = ""
    KnowledgeBase.objects.filter(id=run.evaluation_set.knowledge_base_id).update(
        embedding_model="zhipuai/embedding-3"
    )
    with pytest.raises(EvaluationFailed, match="Zhipu embeddings are not configured"):
        evaluation_run_execute(run_id=run.id, task_id=task_id)
    run.refresh_from_db()
    assert run.status == "failed" and "zhipuai/embedding-3" in run.error
    assert run.finished_at and not run.results.exists() and not run.metrics.exists()
    assert TaskRecord.objects.get(task_id=task_id).progress == 100


def test_a_start_is_refused_while_it_could_not_mean_anything(office_run, staff_user, settings):
    run, task_id, documents = office_run
    questions = run.evaluation_set
    with pytest.raises(Conflict) as refused:
        evaluation_run_start(evaluation_set=questions, user=staff_user)
    assert refused.value.details == {"run_id": run.id, "task_id": task_id}

    # A run whose task was lost long ago is given up, and a new one can start.
    settings.KNOWLEDGE_STUCK_AFTER_SECONDS = 0
    second, _task = evaluation_run_start(evaluation_set=questions, user=staff_user)
    run.refresh_from_db()
    assert run.status == "failed" and "given up" in run.error
    assert second.status == "pending"
    settings.KNOWLEDGE_STUCK_AFTER_SECONDS = 1800
    EvaluationRun.objects.filter(id=second.id).update(status="completed")

    Document.objects.filter(id=documents["vpn.txt"].id).update(status="processing")
    with pytest.raises(Conflict, match="1 document is still being processed"):
        evaluation_run_start(evaluation_set=questions, user=staff_user)
    Document.objects.filter(knowledge_base=questions.knowledge_base).update(status="failed")
    with pytest.raises(Conflict, match="no ready documents"):
        evaluation_run_start(evaluation_set=questions, user=staff_user)
