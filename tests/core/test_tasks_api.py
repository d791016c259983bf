import pytest
from django_celery_results.models import TaskResult

from openspark.core.models import TaskRecord

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
