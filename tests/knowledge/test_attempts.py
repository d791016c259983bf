"""A document counts the runs begun since one last ended: a run whose worker process died
leaves the count raised, and at KNOWLEDGE_INGEST_MAX_ATTEMPTS the document is failed — by
the next delivery of its task or by the sweep — instead of being run again. A run that ends,
however it ends, and a re-index the user asks for, start the count again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from knowledge.models import Document
from knowledge.services import (
    document_reindex,
    document_vectorize,
    documents_upload,
    knowledge_base_create,
    knowledge_sweep,
)
from openspark.core.models import Notification
from tests.knowledge.conftest import upload

pytestmark = pytest.mark.django_db

GIVEN_UP = (
    "Processing was cut short 3 times (its worker process ended, for example for lack of "
    "memory), so it was given up."
)


@pytest.fixture
def document(user, settings) -> Document:
    settings.KNOWLEDGE_INGEST_MAX_ATTEMPTS = 3
    base = knowledge_base_create(owner=user, name="Docs")
    [(document, _task_id)] = documents_upload(
        knowledge_base=base, user=user, files=[upload("notes.txt", b"Plain notes.")]
    )
    return document


def _died_while_processing(document: Document, *, attempts: int) -> None:
    """What a run leaves behind when its process is killed: `processing`, count raised."""
    Document.objects.filter(id=document.id).update(
        status=Document.Status.PROCESSING,
        attempts=attempts,
        updated_at=timezone.now() - timedelta(hours=2),
    )


def test_the_run_after_the_last_allowed_one_fails_the_document(document):
    _died_while_processing(document, attempts=3)
    assert document_vectorize(document_id=document.id, task_id=document.task_id) == "failed"
    document.refresh_from_db()
    assert (document.status, document.error, document.attempts) == ("failed", GIVEN_UP, 0)
    assert document.chunk_count == 0 and not document.chunks.exists()
    assert Notification.objects.filter(user=document.uploaded_by, body=GIVEN_UP).exists()


def test_a_run_that_ends_starts_the_count_again(document):
    _died_while_processing(document, attempts=2)
    # A file that fails to parse ends its run like any other: it is not a dying process.
    Document.objects.filter(id=document.id).update(file_type="pdf")
    assert document_vectorize(document_id=document.id, task_id=document.task_id) == "failed"
    document.refresh_from_db()
    assert document.attempts == 0 and "PDF" in document.error


def test_the_sweep_requeues_a_stuck_document_but_gives_up_on_one_that_kills_workers(document, user):
    other = documents_upload(
        knowledge_base=document.knowledge_base,
        user=user,
        files=[upload("more.txt", b"More notes.")],
    )[0][0]
    _died_while_processing(document, attempts=3)
    _died_while_processing(other, attempts=1)

    report = knowledge_sweep()

    assert (report["requeued"], report["failed"]) == (1, 1)
    document.refresh_from_db()
    other.refresh_from_db()
    assert (document.status, document.error) == ("failed", GIVEN_UP)
    # Re-queued with its count: its next runs still count towards the limit.
    assert (other.status, other.attempts) == ("pending", 1)


def test_a_reindex_the_user_asks_for_starts_the_count_again(document, user):
    _died_while_processing(document, attempts=3)
    document_vectorize(document_id=document.id, task_id=document.task_id)
    document_reindex(document=document, user=user)
    document.refresh_from_db()
    assert (document.status, document.attempts, document.error) == ("pending", 0, "")
