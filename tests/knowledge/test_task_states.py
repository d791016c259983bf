"""Through a real Celery worker: a document that cannot be processed fails its task (FAILURE
with the reason, not SUCCESS "failed") and notifies its uploader; a processed one notifies
that it is ready. Both notifications link to the base."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_celery_results.models import TaskResult
from rest_framework.test import APIClient

from openspark.core.models import DeadLetter, Notification
from tests.knowledge.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TEXT = " ".join(f"Paragraph {n}: the ferry leaves the harbour at seven." for n in range(10))


def _finished(client, task_id: str) -> dict | None:
    """The task as the API shows it once its result is stored (waiting on the database: the
    API's polling budget is for clients, not for this loop)."""
    if not TaskResult.objects.filter(task_id=task_id, status__in=["SUCCESS", "FAILURE"]).exists():
        return None
    return client.get(f"/api/v1/tasks/{task_id}/").json()


def test_failed_and_ready_documents_tell_the_truth_and_notify(celery_worker, user):
    client = APIClient()
    client.force_authenticate(user)
    base = client.post("/api/v1/knowledge/bases/", {"name": "Ferries"}, format="json").json()
    response = client.post(
        f"/api/v1/knowledge/bases/{base['id']}/documents/",
        {"file": [SimpleUploadedFile("blank.txt", b"   \n\n  "),
                  SimpleUploadedFile("ferry.txt", TEXT.encode())]},
        format="multipart",
    )  # fmt: skip
    assert response.status_code == 202
    blank_task, ferry_task = response.json()["task_ids"]

    failed = wait_for(lambda: _finished(client, blank_task), timeout=120)
    assert failed["state"] == "FAILURE", celery_worker.log()
    assert "empty" in failed["error"] and not failed["error"].startswith("TaskFailed")
    assert failed["progress"] == 100 and failed["finished_at"]
    ready = wait_for(lambda: _finished(client, ferry_task), timeout=180)
    assert ready["state"] == "SUCCESS" and ready["result"] == "ready", celery_worker.log()

    notifications = {n.kind: n for n in Notification.objects.filter(user=user)}
    assert set(notifications) == {"document_failed", "document_ready"}
    assert notifications["document_failed"].level == "error"
    assert "empty" in notifications["document_failed"].body
    assert notifications["document_ready"].url == f"/knowledge/?kb={base['id']}"
    # A document failed by design is not an operations problem: no dead letter.
    assert not DeadLetter.objects.filter(task_id__in=[blank_task, ferry_task]).exists()
