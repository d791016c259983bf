"""Reads for task status; only the caller's own tasks, staff see all."""

from __future__ import annotations

from django_celery_results.models import TaskResult

from .errors import NotFound
from .models import TaskRecord

_FINISHED = {"SUCCESS", "FAILURE", "REVOKED"}


def task_status_get_for_user(*, task_id: str, user) -> dict:
    record = TaskRecord.objects.filter(task_id=task_id).first()
    if record is None or not (user.is_staff or record.user_id == user.id):
        raise NotFound("No task with this id.")
    result = TaskResult.objects.filter(task_id=task_id).first()
    state = result.status if result else "PENDING"
    error = None
    payload = None
    if result and state == "FAILURE":
        error = _readable_error(result.result)
    elif result and state == "SUCCESS":
        payload = result.result
    progress = 100 if state == "SUCCESS" else record.progress
    return {
        "task_id": record.task_id,
        "name": record.name,
        "state": state,
        "progress": progress,
        "result": _json_or_text(payload),
        "error": error,
        "created_at": record.created_at,
        "finished_at": result.date_done if result and state in _FINISHED else None,
    }


def _json_or_text(raw):
    import json

    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def _readable_error(raw) -> str:
    data = _json_or_text(raw)
    if isinstance(data, dict):
        return f"{data.get('exc_type', 'Error')}: {data.get('exc_message', '')}".strip()
    return str(data)
