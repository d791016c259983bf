"""Celery entry points; each re-reads its rows by id and calls a service."""

from celery import shared_task

from openspark.core.taskbase import TaskFailed

from .selectors import document_error_get
from .services import (
    RetryableIngestError,
    document_fail,
    document_vectorize,
    knowledge_base_reindex_run,
    knowledge_sweep,
)

MAX_RETRIES = 5


@shared_task(bind=True, name="vectorize_document", max_retries=MAX_RETRIES)
def vectorize_document(self, document_id: int) -> str:
    try:
        status = document_vectorize(document_id=document_id, task_id=self.request.id)
    except RetryableIngestError as exc:
        if self.request.retries >= MAX_RETRIES:
            document_fail(document_id=document_id, reason=str(exc))
            raise  # FAILURE, and a dead letter staff can retry once the provider is back
        # The product's backoff with jitter (ProductTask): a busy provider gets room.
        raise self.retry(exc=exc) from exc
    if status == "failed":  # the document cannot be processed: the task says so, and why
        raise TaskFailed(document_error_get(document_id=document_id))
    return status


@shared_task(name="update_knowledge_base")
def update_knowledge_base(knowledge_base_id: int) -> int:
    return knowledge_base_reindex_run(knowledge_base_id=knowledge_base_id)


@shared_task(name="knowledge_sweep")
def knowledge_sweep_task() -> dict:
    return knowledge_sweep()
