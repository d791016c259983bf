"""Warm-up tasks. Each takes ids, re-reads, and is idempotent (warming twice costs a hit)."""

from celery import shared_task

from openspark.core.services import task_progress_step

from .warmup import cache_warm_hot_documents_run, cache_warm_logins_run, cache_warm_user_run


@shared_task(name="cache_warm_user", ignore_result=False, soft_time_limit=60, time_limit=90)
def cache_warm_user(user_id: int) -> int:
    return cache_warm_user_run(user_id=user_id)


@shared_task(name="cache_warm_logins", soft_time_limit=600, time_limit=660)
def cache_warm_logins() -> int:
    """Users who logged in since the last run (see warmup.login_warm_schedule)."""
    return cache_warm_logins_run()


@shared_task(name="cache_warm_users", soft_time_limit=600, time_limit=660)
def cache_warm_users(user_ids: list[int]) -> int:
    warmed = 0
    for done, user_id in enumerate(user_ids, start=1):
        warmed += cache_warm_user_run(user_id=user_id)
        task_progress_step(done=done, total=len(user_ids))
    return warmed


@shared_task(name="cache_warm_hot_documents", soft_time_limit=600, time_limit=660)
def cache_warm_hot_documents(limit: int | None = None) -> int:
    return cache_warm_hot_documents_run(limit=limit)
