"""Through a real Celery worker subprocess: upload → ready with progress on the task record,
base re-index after a chunk-size change, and the sweep (stuck documents, stray vectors)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from knowledge.models import Document
from knowledge.selectors import passages_for_query
from knowledge.services import knowledge_sweep
from knowledge.vectorstore import VectorRow, get_vector_store
from openspark.core.models import TaskRecord
from tests.knowledge.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LONG_TEXT = " ".join(
    f"Section {n}: the lighthouse keeper logs the weather at dawn, noon and dusk."
    for n in range(40)
)


def _status(document_id: int) -> str | None:
    document = Document.objects.get(id=document_id)
    return document.status if document.status in ("ready", "failed") else None


def test_worker_vectorizes_reindexes_and_sweeps(celery_worker, user, embedder):
    client = APIClient()
    client.force_authenticate(user)
    base = client.post("/api/v1/knowledge/bases/", {"name": "Logs"}, format="json").json()
    response = client.post(
        f"/api/v1/knowledge/bases/{base['id']}/documents/",
        {"file": [SimpleUploadedFile("keeper.txt", LONG_TEXT.encode())]},
        format="multipart",
    )
    assert response.status_code == 202
    document_id, task_id = response.json()["documents"][0]["id"], response.json()["task_ids"][0]
    assert wait_for(lambda: _status(document_id), timeout=120) == "ready", celery_worker.log()
    document = Document.objects.get(id=document_id)
    first_count = document.chunk_count
    assert document.progress == 100 and first_count > 1
    assert TaskRecord.objects.get(task_id=task_id).progress == 100
    task = client.get(f"/api/v1/tasks/{task_id}/").json()
    assert task["progress"] == 100 and task["name"] == "vectorize_document"

    passages = passages_for_query(
        user=user, knowledge_base_ids=[base["id"]], query="when does the keeper log the weather?"
    )
    assert passages and passages[0].document_id == document_id

    # Smaller chunks: the base is re-indexed by update_knowledge_base → vectorize_document.
    patched = client.patch(
        f"/api/v1/knowledge/bases/{base['id']}/", {"chunk_size": 200}, format="json"
    ).json()
    assert patched["reindex_task_id"]
    wait_for(
        lambda: Document.objects.filter(
            id=document_id, status="ready", chunk_count__gt=first_count
        ).exists(),
        timeout=120,
    )
    store = get_vector_store()
    collection = store.collection_name(model=base["embedding_model"], dimension=384)
    document.refresh_from_db()
    assert store.count(collection=collection, expression=f"document_id == {document_id}") == (
        document.chunk_count
    )

    # The sweep: a document stuck in `processing` is queued again; a stray vector goes.
    Document.objects.filter(id=document_id).update(
        status="processing", updated_at=timezone.now() - timedelta(hours=2)
    )
    store.upsert(
        collection=collection,
        rows=[VectorRow(987654321, base["id"], document_id, "stray", [0.1] * 384)],
    )
    report = knowledge_sweep()
    assert report == {"requeued": 1, "failed": 0, "orphan_vectors_removed": 1}
    assert wait_for(lambda: _status(document_id), timeout=120) == "ready"
    assert store.count(collection=collection, expression="chunk_id == 987654321") == 0
