"""The base class of every Celery task of the product (the app's `task_cls`, set in
openspark/celery.py), so the policies below hold for all of them without a line per task:

- retries back off exponentially with full jitter (Celery's `retry_backoff`, `retry_jitter`,
  `retry_backoff_max`, `max_retries`, read from settings: TASK_RETRY_BACKOFF,
  TASK_RETRY_BACKOFF_MAX, TASK_MAX_RETRIES), for `autoretry_for` and for `self.retry()`;
- a task queued without `task_enqueue` (beat, Celery's own) gets its TaskRecord when it starts;
- a task that fails for good — retries exhausted, or an unexpected error — becomes a
  DeadLetter that staff can retry or discard. `TaskFailed` is the exception for a work item
  that ended failed by design: the task reads FAILURE with its reason, and is no dead letter.
"""

from __future__ import annotations

import logging

from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

logger = logging.getLogger(__name__)


class TaskFailed(Exception):
    """The task did its job and the work item failed (a document that cannot be parsed, a
    reply the model could not give). The message is the readable reason shown in
    `GET /api/v1/tasks/{id}/`; retrying the same input would fail the same way."""


class ProductTask(Task):
    retry_jitter = True

    @property
    def max_retries(self) -> int:
        return settings.TASK_MAX_RETRIES

    @property
    def retry_backoff(self) -> int:
        return settings.TASK_RETRY_BACKOFF

    @property
    def retry_backoff_max(self) -> int:
        return settings.TASK_RETRY_BACKOFF_MAX

    def retry(self, args=None, kwargs=None, exc=None, throw=True, eta=None, countdown=None,
              max_retries=None, **options):  # fmt: skip
        if eta is None and countdown is None:
            countdown = get_exponential_backoff_interval(
                factor=self.retry_backoff,
                retries=self.request.retries,
                maximum=self.retry_backoff_max,
                full_jitter=self.retry_jitter,
            )
        return super().retry(
            args=args, kwargs=kwargs, exc=exc, throw=throw, eta=eta, countdown=countdown,
            max_retries=max_retries, **options,
        )  # fmt: skip

    def before_start(self, task_id, args, kwargs) -> None:
        if self.request.is_eager:
            return
        from .services import task_record_ensure

        try:
            task_record_ensure(
                task_id=task_id, name=self.name, args=args, kwargs=kwargs, options=self._routing()
            )
        except Exception:  # bookkeeping must not stop the work
            logger.exception("Could not record task %s %s", self.name, task_id)

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        if isinstance(exc, TaskFailed):
            return
        from .services import dead_letter_record

        try:
            dead_letter_record(
                task_id=task_id,
                name=self.name,
                args=args,
                kwargs=kwargs,
                options=self._routing(),
                error=f"{type(exc).__name__}: {exc}",
                traceback=str(einfo or ""),
                attempts=self.request.retries + 1,
            )
        except Exception:
            logger.exception("Could not record dead letter for %s %s", self.name, task_id)

    def _routing(self) -> dict:
        queue = (self.request.delivery_info or {}).get("routing_key")
        return {"queue": queue} if queue else {}
