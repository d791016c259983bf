"""Staff pages: multi-file upload, the document list with status/progress, actions that keep
vectors in step, and the retrieval test page."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from knowledge.models import Document
from knowledge.services import document_vectorize, knowledge_base_create

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("embedder")]

LEAVE = b"# Leave\n\nEmployees get 25 days of paid leave."


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_admin_upload_list_actions_and_retrieval_test(staff_client, staff_user):
    base = knowledge_base_create(owner=staff_user, name="Handbook")
    upload_url = reverse("admin:knowledge_knowledgebase_upload", args=[base.id])
    assert staff_client.get(upload_url).status_code == 200
    response = staff_client.post(
        upload_url,
        {
            "files": [
                SimpleUploadedFile("leave.md", LEAVE),
                SimpleUploadedFile("broken.pdf", b"%PDF-1.4 this is not really a pdf"),
            ]
        },
    )
    assert response.status_code == 302
    documents = {d.title: d for d in Document.objects.filter(knowledge_base=base)}
    assert set(documents) == {"leave.md", "broken.pdf"}

    changelist = reverse("admin:knowledge_document_changelist")
    page = staff_client.get(changelist).content.decode()
    assert 'http-equiv="refresh"' in page and "<progress" in page  # refreshes while pending

    for document in documents.values():
        document_vectorize(document_id=document.id, task_id=document.task_id)
    page = staff_client.get(changelist).content.decode()
    assert 'http-equiv="refresh"' not in page
    assert "damaged" in page and "Ready" in page and "Failed" in page

    # A duplicate upload is refused with the reason, nothing stored.
    again = staff_client.post(
        upload_url,
        {"files": [SimpleUploadedFile("copy.md", LEAVE)]},
        follow=True,
    )
    assert "already in the knowledge base" in again.content.decode()
    assert Document.objects.filter(knowledge_base=base).count() == 2

    test_url = reverse("admin:knowledge_retrieval_test")
    result = staff_client.get(
        test_url, {"query": "how many days of paid leave", "knowledge_bases": [base.id],
                   "top_k": 3, "mode": "hybrid"},
    ).content.decode()  # fmt: skip
    assert "Employees get 25 days of paid leave" in result and "leave.md" in result

    broken = documents["broken.pdf"]
    staff_client.post(changelist, {"action": "retry_failed", "_selected_action": [broken.id]})
    broken.refresh_from_db()
    assert broken.status == "pending" and broken.error == ""

    leave = documents["leave.md"]
    staff_client.post(changelist, {"action": "delete_documents", "_selected_action": [leave.id]})
    assert not Document.objects.filter(id=leave.id).exists()
    result = staff_client.get(
        test_url, {"query": "paid leave", "top_k": 3, "mode": "hybrid"}
    ).content.decode()
    assert "Employees get 25 days" not in result and "No matching chunks" in result
