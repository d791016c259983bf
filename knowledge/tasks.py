"""Celery entry points; each re-reads its rows by id and calls a service. Ingestion runs on the
ingest queue (settings.TASK_QUEUE_SETTINGS), consumed by prefork workers that enforce
vectorize_document's time limits (VectorizeTask) and a memory limit per child
(knowledge/apps.py); the sweep and retrieval evaluation (searches, no parsing) on the default
queue."""

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings

from openspark.core.taskbase import ProductTask, TaskFailed

from .selectors import document_error_get
from .services import (
    RetryableIngestError,
    document_fail,
    document_time_limit_exceeded,
    document_vectorize,
    evaluation_run_execute,
    knowledge_base_reindex_run,
    knowledge_sweep,
    vectors_seal_when_idle,
)

MAX_RETRIES = 5


class VectorizeTask(ProductTask):
    # A ProductTask like every other (a `base=` replaces the app's task class): the product's
    # retry backoff (not Celery's fixed 180 s), a record when it starts, a dead letter when
    # its retries run out.
    def apply_async(self, args=None, kwargs=None, **options):
        # Time limits travel in the message, where they win over the worker's own, so they are
        # set here, from the settings when the task is sent. At the soft limit the run stops
        # where it is (an exception in the task, which fails the document); a run stuck in C
        # code (a regex, a parser), where that exception cannot arrive, is killed with its
        # pool child 5 s later. Prefork pools only: Celery ignores both in a threads pool.
        limit = settings.KNOWLEDGE_INGEST_TIME_LIMIT
        options.setdefault("soft_time_limit", limit)
        options.setdefault("time_limit", limit + 5)
        return super().apply_async(args, kwargs, **options)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # At the hard time limit the pool child is killed mid-run and Celery calls this in the
        # worker's main process; the message is acknowledged, so the document ends here. (The
        # soft limit is handled by the pipeline; it only gets here if it struck while failing.)
        if isinstance(exc, TimeLimitExceeded | SoftTimeLimitExceeded):
            document_id = args[0] if args else kwargs["document_id"]
            document_time_limit_exceeded(document_id=document_id, task_id=task_id)
        super().on_failure(exc, task_id, args, kwargs, einfo)


@shared_task(bind=True, base=VectorizeTask, name="vectorize_document", max_retries=MAX_RETRIES)
def vectorize_document(self, document_id: int) -> str:
    try:
        status = document_vectorize(document_id=document_id, task_id=self.request.id)
    except RetryableIngestError as exc:
        if self.request.retries >= MAX_RETRIES:
            document_fail(document_id=document_id, reason=str(exc))
            raise  # FAILURE, and a dead letter staff can retry once the provider is back
        # The product's backoff with jitter (ProductTask): a busy provider gets room.
        raise self.retry(exc=exc) from exc
    finally:
        vectors_seal_when_idle()
    if status == "failed":  # the document cannot be processed: the task says so, and why
        raise TaskFailed(document_error_get(document_id=document_id))
    return status


@shared_task(name="update_knowledge_base")
def update_knowledge_base(knowledge_base_id: int) -> int:
    return knowledge_base_reindex_run(knowledge_base_id=knowledge_base_id)


@shared_task(name="knowledge_sweep")
def knowledge_sweep_task() -> dict:
    return knowledge_sweep()


@shared_task(bind=True, name="evaluate_retrieval")
def evaluate_retrieval(self, run_id: int) -> str:
    # A run that fails is marked failed with its reason, then EvaluationFailed ends the task
    # in FAILURE with the same reason (GET tasks/{id}/ shows it).
    return evaluation_run_execute(run_id=run_id, task_id=self.request.id)
