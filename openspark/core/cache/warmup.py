"""Warm-up: fill the caches a user is about to need (on login) and the most read documents
(periodically). The warmers are the apps' own cached selectors, listed in settings as dotted
paths, so this package never imports the apps it serves."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.module_loading import import_string

from . import backend
from .keys import hot_key, login_warm_keys
from .namespaces import DOCUMENT_CONTENT
from .service import cache_enabled, cache_hot_members, warming

logger = logging.getLogger("openspark.cache")

# The hot set keeps this many times the warmed number of members; the rest is trimmed.
_HOT_KEEP_FACTOR = 10
# A queued login warm-up task is trusted for this long; if it was lost, the next login after
# that queues a new one.
_LOGIN_TASK_GRACE = 300


def _run_warmers(paths: list[str], **kwargs) -> int:
    warmed = 0
    with warming():
        for path in paths:
            try:
                warmed += int(import_string(path)(**kwargs) or 0)
            except Exception:  # one broken warmer must not stop the others
                logger.exception("Cache warmer %s failed", path)
    return warmed


def cache_warm_user_run(*, user_id: int) -> int:
    """Warm one user's caches; returns how many values were warmed (0 if caching is off)."""
    if not cache_enabled():
        return 0
    user = get_user_model().objects.select_related("plan").filter(pk=user_id).first()
    if user is None or not user.is_active:
        return 0
    return _run_warmers(settings.CACHE_USER_WARMERS, user=user)


def login_warm_schedule(*, user_id: int) -> bool:
    """Queue the user for warm-up. Logins coalesce: the user joins a pending set and a task
    is queued only when none is queued already, so a burst of logins (or a test run without
    a worker) costs one task, not one per login. Returns whether a task must be queued."""

    def schedule(client):
        pending, scheduled = login_warm_keys()
        pipe = client.pipeline(transaction=True)
        pipe.sadd(pending, user_id)
        pipe.expire(pending, 3600)
        pipe.set(scheduled, 1, nx=True, ex=_LOGIN_TASK_GRACE)
        return bool(pipe.execute()[2])

    if not cache_enabled():
        return False
    try:
        return backend.call(schedule)
    except backend.Unavailable:
        return False  # no Redis: nothing could be cached anyway


def cache_warm_logins_run() -> int:
    """Warm every user waiting since the last run."""

    def drain(client):
        pending, scheduled = login_warm_keys()
        # Flag first: a login arriving from now on queues a new task, so none is left waiting.
        client.delete(scheduled)
        pipe = client.pipeline(transaction=True)
        pipe.smembers(pending)
        pipe.delete(pending)
        return pipe.execute()[0]

    try:
        user_ids = sorted(int(uid) for uid in backend.call(drain))
    except backend.Unavailable:
        return 0
    return sum(cache_warm_user_run(user_id=user_id) for user_id in user_ids)


def cache_warm_hot_documents_run(*, limit: int | None = None) -> int:
    """Warm the most read documents, then trim the hot set so it stays small."""
    if not cache_enabled():
        return 0
    limit = limit or settings.CACHE_WARM_HOT_DOCUMENTS
    ids = [int(m) for m in cache_hot_members(DOCUMENT_CONTENT, limit=limit) if m.isdigit()]
    try:
        backend.call(
            lambda client: client.zremrangebyrank(
                hot_key(DOCUMENT_CONTENT), 0, -(limit * _HOT_KEEP_FACTOR) - 1
            )
        )
    except backend.Unavailable:
        return 0
    if not ids:
        return 0
    return _run_warmers(settings.CACHE_DOCUMENT_WARMERS, document_ids=ids)
