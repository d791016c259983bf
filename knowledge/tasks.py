"""Celery entry points; each re-reads its rows by id and calls a service."""

from celery import shared_task

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
        return document_vectorize(document_id=document_id, task_id=self.request.id)
    except RetryableIngestError as exc:
        if self.request.retries >= MAX_RETRIES:
            document_fail(document_id=document_id, reason=str(exc))
            return "failed"
        # Exponential backoff: 10 s, 20 s, 40 s… a busy provider gets room to recover.
        raise self.retry(exc=exc, countdown=10 * 2**self.request.retries) from exc


@shared_task(name="update_knowledge_base")
def update_knowledge_base(knowledge_base_id: int) -> int:
    return knowledge_base_reindex_run(knowledge_base_id=knowledge_base_id)


@shared_task(name="knowledge_sweep")
def knowledge_sweep_task() -> dict:
    return knowledge_sweep()
