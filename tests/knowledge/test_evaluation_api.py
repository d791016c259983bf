"""The staff evaluation API and admin page: who may use them (403 for everyone but staff, the
owner of the base included; 404 for what is not in the base), a set uploaded, run and
reported through the API, the schema, and the admin page with its report and chart data."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from knowledge.models import EvaluationRun, EvaluationSet
from knowledge.services import (
    evaluation_run_execute,
    evaluation_set_create,
    knowledge_base_create,
)
from tests.knowledge.conftest import ingest

pytestmark = pytest.mark.django_db

QUESTIONS = (
    b"question,document,answer\n"
    b"How much holiday time do workers get annually?,leave.txt,\n"  # no shared word
    b"canteen lunch,,NOON\n"
)


def _client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def _set(base, user) -> EvaluationSet:
    upload = SimpleUploadedFile("q.csv", b"question,answer\nA?,b\n")
    return evaluation_set_create(knowledge_base=base, user=user, upload=upload)


def test_only_staff_may_evaluate_and_only_what_is_in_the_base(user, staff_user):
    base = knowledge_base_create(owner=user, name="Mine")  # the owner is not staff
    other = knowledge_base_create(owner=user, name="Other")
    own_set, other_set = _set(base, staff_user), _set(other, staff_user)
    other_run = EvaluationRun.objects.create(evaluation_set=other_set)
    prefix = f"/api/v1/knowledge/bases/{base.id}/evaluations"
    upload = {"file": SimpleUploadedFile("q.csv", b"question,answer\nA?,b\n")}
    requests = [
        ("get", f"{prefix}/sets/", None),
        ("post", f"{prefix}/sets/", upload),
        ("get", f"{prefix}/sets/{own_set.id}/", None),
        ("delete", f"{prefix}/sets/{own_set.id}/", None),
        ("get", f"{prefix}/runs/", None),
        ("post", f"{prefix}/runs/", {"evaluation_set_id": own_set.id}),
        ("get", f"{prefix}/runs/{other_run.id}/", None),
    ]
    for method, url, data in requests:
        anonymous = getattr(_client(), method)(url, data, format="multipart")
        assert anonymous.status_code == 401, (method, url)
        assert anonymous.json()["error"]["code"] == "not_authenticated"
        owner = getattr(_client(user), method)(url, data, format="multipart")
        assert owner.status_code == 403, (method, url)
        assert owner.json()["error"]["code"] == "permission_denied"
    assert EvaluationSet.objects.filter(id=own_set.id).exists()
    assert not EvaluationRun.objects.filter(evaluation_set=own_set).exists()

    staff = _client(staff_user)
    missing = staff.get("/api/v1/knowledge/bases/999999/evaluations/sets/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    # Another base's set and run are not found through this base.
    for method, url, data in [
        ("get", f"{prefix}/sets/{other_set.id}/", None),
        ("delete", f"{prefix}/sets/{other_set.id}/", None),
        ("post", f"{prefix}/runs/", {"evaluation_set_id": other_set.id}),
        ("get", f"{prefix}/runs/{other_run.id}/", None),
    ]:
        response = getattr(staff, method)(url, data, format="json")
        assert response.status_code == 404, (method, url)
        assert response.json()["error"]["code"] == "not_found"
    assert EvaluationSet.objects.filter(id=other_set.id).exists()
    assert staff.get(f"{prefix}/sets/{own_set.id}/").status_code == 200
    listed = staff.get(f"{prefix}/runs/", {"evaluation_set_id": "x"})
    assert listed.status_code == 400 and listed.json()["error"]["code"] == "validation_error"


@pytest.mark.usefixtures("embedder")
def test_upload_run_and_report_through_the_api(staff_user):
    base = knowledge_base_create(owner=staff_user, name="Office")
    ingest(base, staff_user, "leave.txt", b"Employees receive 25 days of paid vacation a year.")
    ingest(base, staff_user, "canteen.txt", b"The canteen serves lunch from noon until two.")
    staff = _client(staff_user)
    prefix = f"/api/v1/knowledge/bases/{base.id}/evaluations"
    created = staff.post(
        f"{prefix}/sets/", {"file": SimpleUploadedFile("office.csv", QUESTIONS)}, format="multipart"
    )
    assert created.status_code == 201
    set_id = created.json()["id"]
    assert staff.get(f"{prefix}/sets/").json()["results"][0]["question_count"] == 2

    started = staff.post(f"{prefix}/runs/", {"evaluation_set_id": set_id}, format="json")
    assert started.status_code == 202
    body = started.json()
    run_id, task_id = body["run"]["id"], body["task_id"]
    assert body["run"]["status"] == "pending" and body["run"]["task_id"] == task_id
    assert body["run"]["metrics"] == {"hybrid": None, "vector": None, "keyword": None}
    again = staff.post(f"{prefix}/runs/", {"evaluation_set_id": set_id}, format="json")
    assert again.status_code == 409 and again.json()["error"]["details"]["run_id"] == run_id

    # What the worker runs (the task was queued on commit, which this test never reaches).
    assert evaluation_run_execute(run_id=run_id, task_id=task_id) == "completed"
    task = staff.get(f"/api/v1/tasks/{task_id}/").json()
    assert task["name"] == "evaluate_retrieval" and task["progress"] == 100

    detail = staff.get(f"{prefix}/runs/{run_id}/").json()
    assert detail["status"] == "completed" and detail["progress"] == 100
    assert detail["question_count"] == 2
    assert detail["settings"]["chunk_size"] == 500 and detail["settings"]["top_k"] == 5
    metrics = detail["metrics"]
    assert [metrics[m]["recall_at_1"] for m in ("hybrid", "vector", "keyword")] == [1.0, 1.0, 0.5]
    assert metrics["keyword"]["mrr"] == 0.5 and metrics["keyword"]["misses"] == 1
    assert metrics["hybrid"]["latency_p95_ms"] >= metrics["hybrid"]["latency_p50_ms"] > 0
    [miss] = detail["misses"]
    assert miss["row"] == 2 and miss["expected_document"] == "leave.txt"
    assert miss["ranks"] == {"hybrid": 1, "vector": 1, "keyword": None}
    assert miss["retrieved"] == {"keyword": []}

    runs = staff.get(f"{prefix}/runs/", {"evaluation_set_id": set_id}).json()
    assert runs["count"] == 1 and runs["results"][0]["metrics"]["vector"]["recall_at_10"] == 1.0

    assert staff.delete(f"{prefix}/sets/{set_id}/").status_code == 204
    assert not EvaluationRun.objects.filter(id=run_id).exists()
    assert staff.get(f"{prefix}/runs/{run_id}/").status_code == 404


def test_the_schema_declares_the_evaluation_api(client):
    schema = client.get("/api/schema/?format=json").json()
    prefix = "/api/v1/knowledge/bases/{knowledge_base_id}/evaluations"
    expected = {
        f"{prefix}/sets/": {"get", "post"},
        f"{prefix}/sets/{{evaluation_set_id}}/": {"get", "delete"},
        f"{prefix}/runs/": {"get", "post"},
        f"{prefix}/runs/{{run_id}}/": {"get"},
    }
    for path, methods in expected.items():
        operations = schema["paths"][path]
        assert methods <= set(operations), path
        for method in methods:
            assert {"401", "403", "404"} <= set(operations[method]["responses"]), (path, method)
    upload = schema["paths"][f"{prefix}/sets/"]["post"]
    assert {"201", "400", "413", "415"} <= set(upload["responses"])
    assert "multipart/form-data" in upload["requestBody"]["content"]
    start = schema["paths"][f"{prefix}/runs/"]["post"]["responses"]
    assert {"202", "409"} <= set(start)
    error = schema["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["$ref"].endswith("/ErrorBody")
    page = schema["components"]["schemas"]["EvaluationRunPage"]["properties"]
    assert set(page) == {"count", "next", "previous", "results"}


@pytest.mark.usefixtures("embedder")
def test_admin_page_uploads_runs_and_shows_the_report_and_history(client, staff_user):
    client.force_login(staff_user)
    base = knowledge_base_create(owner=staff_user, name="Office", chunk_size=300)
    ingest(base, staff_user, "leave.txt", b"Employees receive 25 days of paid vacation a year.")
    ingest(base, staff_user, "canteen.txt", b"The canteen serves lunch from noon until two.")
    url = reverse("admin:knowledge_knowledgebase_evaluate", args=[base.id])
    changelist = client.get(reverse("admin:knowledge_knowledgebase_changelist")).content.decode()
    assert url in changelist  # the per-base "Evaluate" link

    page = client.get(url).content.decode()
    assert "No question set yet." in page and "evaluation-chart" not in page

    wrong = client.post(
        url,
        {"action": "upload", "file": SimpleUploadedFile("bad.csv", b"question,answer\n,x\n")},
        follow=True,
    ).content.decode()
    assert "Row 2: the question is empty" in wrong
    response = client.post(
        url, {"action": "upload", "name": "Office FAQ",
              "file": SimpleUploadedFile("office.csv", QUESTIONS)},
    )  # fmt: skip
    assert response.status_code == 302
    questions = EvaluationSet.objects.get(name="Office FAQ")

    response = client.post(url, {"action": "start", "set": questions.id})
    assert response.status_code == 302
    run = EvaluationRun.objects.get(evaluation_set=questions)
    page = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' in page and "<progress" in page  # reloads while it runs

    evaluation_run_execute(run_id=run.id, task_id=run.task_id)
    page = client.get(response["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in page
    report = re.search(r'<table class="evaluation-report">.*?</table>', page, re.S).group(0)
    cells = re.findall(r"<tr><th scope=\"row\">(.*?)</th>(.*?)</tr>", report)
    rows = {label: re.findall(r"<td>(.*?)</td>", values) for label, values in cells}
    assert rows["Recall@1"] == ["1.000", "1.000", "0.500"]
    assert rows["MRR"] == ["1.000", "1.000", "0.500"]
    assert rows["Missed (not within top k)"] == ["0", "0", "1"]
    assert "How much holiday time do workers get annually?" in page and "nothing found" in page
    assert "Chunk size 300, overlap 50" in page

    # The chart's data: a static module reads it from json_script (no inline script).
    history = json.loads(
        re.search(r'<script id="evaluation-history" type="application/json">(.*?)</script>',
                  page, re.S).group(1)
    )  # fmt: skip
    assert [(h["id"], h["chunk_size"], h["embedding_model"]) for h in history] == [
        (run.id, 300, "local/all-MiniLM-L6-v2")
    ]
    assert history[0]["metrics"]["keyword"]["mrr"] == 0.5
    assert "js/admin_evaluation.js" in page and "vendor/chart.umd.min.js" in page
    assert not re.search(r"<script(?![^>]*(src=|application/json))", page)

    client.post(url, {"action": "delete", "set": questions.id})
    assert not EvaluationSet.objects.filter(id=questions.id).exists()
