from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from openspark.core.models import TaskRecord
from openspark.core.services import tasks_expire

pytestmark = pytest.mark.django_db


def test_own_task_status_pending_then_success(auth_client, user):
    TaskRecord.objects.create(task_id="t-1", name="openspark.demo", user=user, progress=40)
    body = auth_client.get("/api/v1/tasks/t-1/").json()
    assert body["state"] == "PENDING"
    assert body["progress"] == 40
    assert body["finished_at"] is None

    TaskResult.objects.create(task_id="t-1", status="SUCCESS", result='{"chunks": 3}')
    body = auth_client.get("/api/v1/tasks/t-1/").json()
    assert body["state"] == "SUCCESS"
    assert body["result"] == {"chunks": 3}
    assert body["progress"] == 100
    assert body["finished_at"] is not None


def test_failed_task_reports_a_readable_error(auth_client, user):
    TaskRecord.objects.create(task_id="t-2", name="x", user=user)
    TaskResult.objects.create(
        task_id="t-2",
        status="FAILURE",
        result='{"exc_type": "ValueError", "exc_message": "bad pdf"}',
    )
    body = auth_client.get("/api/v1/tasks/t-2/").json()
    assert body["state"] == "FAILURE"
    assert body["error"] == "ValueError: bad pdf"


def test_other_users_task_is_404_but_staff_sees_it(auth_client, other_user, staff_user, api_client):
    TaskRecord.objects.create(task_id="t-3", name="x", user=other_user)
    response = auth_client.get("/api/v1/tasks/t-3/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    api_client.force_authenticate(staff_user)
    assert api_client.get("/api/v1/tasks/t-3/").status_code == 200


def test_unknown_task_is_404(auth_client):
    assert auth_client.get("/api/v1/tasks/nope/").status_code == 404


def test_task_failed_reads_its_reason_alone(auth_client, user):
    TaskRecord.objects.create(task_id="t-4", name="vectorize_document", user=user)
    TaskResult.objects.create(
        task_id="t-4",
        status="FAILURE",
        result='{"exc_type": "TaskFailed", "exc_message": ["The file is empty."], '
        '"exc_module": "openspark.core.taskbase"}',
    )
    body = auth_client.get("/api/v1/tasks/t-4/").json()
    assert (body["state"], body["error"]) == ("FAILURE", "The file is empty.")


def test_a_task_nobody_reported_on_reads_lost_not_pending(auth_client, user, settings):
    settings.TASK_LOST_AFTER_SECONDS = 60
    TaskRecord.objects.create(task_id="t-5", name="x", user=user)
    assert auth_client.get("/api/v1/tasks/t-5/").json()["state"] == "PENDING"
    TaskRecord.objects.filter(task_id="t-5").update(
        updated_at=timezone.now() - timedelta(seconds=61)
    )
    body = auth_client.get("/api/v1/tasks/t-5/").json()
    assert body["state"] == "LOST" and "lost" in body["error"]
    # Started, then silent past the time limit plus the same margin: lost too.
    settings.CELERY_TASK_TIME_LIMIT = 60
    TaskResult.objects.create(task_id="t-5", status="STARTED")
    assert auth_client.get("/api/v1/tasks/t-5/").json()["state"] == "STARTED"
    TaskResult.objects.filter(task_id="t-5").update(
        date_done=timezone.now() - timedelta(seconds=121)
    )
    assert auth_client.get("/api/v1/tasks/t-5/").json()["state"] == "LOST"


def test_task_list_own_for_users_all_for_staff_with_filters(
    auth_client, api_client, user, other_user, staff_user
):
    TaskRecord.objects.create(task_id="mine-1", name="vectorize_document", user=user)
    TaskRecord.objects.create(task_id="mine-2", name="send_notification", user=user)
    TaskRecord.objects.create(task_id="theirs", name="vectorize_document", user=other_user)
    TaskResult.objects.create(task_id="mine-1", status="SUCCESS", result="3")
    TaskResult.objects.create(task_id="theirs", status="FAILURE", result='{"exc_type": "E"}')

    page = auth_client.get("/api/v1/tasks/").json()
    assert [t["task_id"] for t in page["results"]] == ["mine-2", "mine-1"]
    assert page["results"][1]["state"] == "SUCCESS" and page["results"][1]["result"] == 3
    # A user cannot look at someone else's by filtering.
    assert auth_client.get(f"/api/v1/tasks/?user={other_user.username}").json()["count"] == 2

    api_client.force_authenticate(staff_user)
    everyone = api_client.get("/api/v1/tasks/").json()
    assert everyone["count"] == 3
    failed = api_client.get("/api/v1/tasks/?state=failure").json()["results"]
    assert [(t["task_id"], t["user"]) for t in failed] == [("theirs", other_user.username)]
    named = api_client.get("/api/v1/tasks/?name=vectorize_document&page_size=1").json()
    assert named["count"] == 2 and named["next"]
    by_user = api_client.get(f"/api/v1/tasks/?user={user.username}&state=PENDING").json()
    assert [t["task_id"] for t in by_user["results"]] == ["mine-2"]


def test_expiry_removes_records_and_results_together(user, settings):
    settings.TASK_RETENTION_DAYS = 7
    old = timezone.now() - timedelta(days=8)
    for task_id in ("old", "new"):
        TaskRecord.objects.create(task_id=task_id, name="x", user=user)
        TaskResult.objects.create(task_id=task_id, status="SUCCESS", result="1")
    TaskRecord.objects.filter(task_id="old").update(updated_at=old)
    TaskResult.objects.create(task_id="orphan", status="SUCCESS", result="1")
    TaskResult.objects.filter(task_id="orphan").update(date_done=old)

    assert tasks_expire() == {"records": 1, "results": 2, "dead_letters": 0}
    assert set(TaskRecord.objects.values_list("task_id", flat=True)) == {"new"}
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == {"new"}
