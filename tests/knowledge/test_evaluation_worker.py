"""Through a real Celery worker subprocess: a run started from the API goes to the default
queue, reports its progress on the task record and ends completed, with its report."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from knowledge.models import Document
from openspark.celery import app
from tests.knowledge.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_run_goes_through_the_worker(celery_worker, staff_user, embedder):
    assert app.amqp.router.route({}, "evaluate_retrieval", (), {})["queue"].name == "default"
    client = APIClient()
    client.force_authenticate(staff_user)
    base = client.post("/api/v1/knowledge/bases/", {"name": "Office"}, format="json").json()
    uploaded = client.post(
        f"/api/v1/knowledge/bases/{base['id']}/documents/",
        {"file": [
            SimpleUploadedFile("leave.txt", b"Employees receive 25 days of paid vacation."),
            SimpleUploadedFile("canteen.txt", b"The canteen serves lunch from noon until two."),
        ]},
        format="multipart",
    ).json()  # fmt: skip
    ids = [d["id"] for d in uploaded["documents"]]
    wait_for(lambda: Document.objects.filter(id__in=ids, status="ready").count() == 2, timeout=120)
    prefix = f"/api/v1/knowledge/bases/{base['id']}/evaluations"
    questions = SimpleUploadedFile(
        "q.jsonl",
        b'{"question": "How much holiday do workers get?", "document": "leave.txt"}\n'
        b'{"question": "canteen lunch", "answer": "noon"}\n',
    )
    set_id = client.post(f"{prefix}/sets/", {"file": questions}, format="multipart").json()["id"]
    started = client.post(f"{prefix}/runs/", {"evaluation_set_id": set_id}, format="json").json()

    task = wait_for(
        lambda: (
            (t := client.get(f"/api/v1/tasks/{started['task_id']}/").json())["state"]
            in ("SUCCESS", "FAILURE")
            and t
        ),
        timeout=120,
    )
    assert task["state"] == "SUCCESS", (task, celery_worker.log())
    assert task["progress"] == 100 and task["result"] == "completed"
    run = client.get(f"{prefix}/runs/{started['run']['id']}/").json()
    assert run["status"] == "completed" and run["progress"] == 100
    assert run["metrics"]["hybrid"]["recall_at_10"] == 1.0
    assert run["metrics"]["keyword"]["recall_at_10"] == 0.5
