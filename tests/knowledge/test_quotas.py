"""Per-plan storage quotas: stored bytes, documents and knowledge bases per user, refused in
the one error shape with nothing stored, exact under parallel requests; staff uploading in the
admin are not limited; GET me/ shows the limits and what is used."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.urls import reverse
from rest_framework.test import APIClient

from knowledge.models import Document, KnowledgeBase
from knowledge.services import knowledge_base_create
from throttling.models import Plan


@pytest.fixture(autouse=True)
def media(settings, tmp_path) -> Path:
    """This test's own storage folder, so "nothing stored" can be checked on disk."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def stored_files(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def limits(**quotas: int) -> None:
    """Set the default (free) plan's storage quotas; everything else unlimited."""
    values = {"storage_quota_bytes": 0, "document_quota": 0, "knowledge_base_quota": 0}
    Plan.objects.filter(tier="free").update(**{**values, **quotas})


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def upload(client, base_id: int, *files: tuple[str, bytes]):
    payload = {"file": [SimpleUploadedFile(name, content) for name, content in files]}
    return client.post(f"/api/v1/knowledge/bases/{base_id}/documents/", payload, format="multipart")


def assert_quota_error(response, *, kind: str, limit: int, used: int, needed: int) -> None:
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["message"]
    assert error["details"] == {"kind": kind, "limit": limit, "used": used, "needed": needed}


@pytest.mark.django_db
def test_uploads_beyond_the_document_quota_are_refused_with_nothing_stored(user, media):
    limits(document_quota=2)
    client = client_for(user)
    base = knowledge_base_create(owner=user, name="Docs")
    assert upload(client, base.id, ("a.txt", b"alpha")).status_code == 202
    on_disk = stored_files(media)

    # Two more in one request do not fit one free slot: the whole request is refused.
    response = upload(client, base.id, ("b.txt", b"beta"), ("c.txt", b"gamma"))
    assert_quota_error(response, kind="documents", limit=2, used=1, needed=2)
    assert upload(client, base.id, ("b.txt", b"beta")).status_code == 202
    response = upload(client, base.id, ("c.txt", b"gamma"))
    assert_quota_error(response, kind="documents", limit=2, used=2, needed=1)
    assert Document.objects.filter(knowledge_base=base).count() == 2
    assert len(stored_files(media)) == len(on_disk) + 1

    # Counted over every base the user owns, and freed by deleting.
    other = knowledge_base_create(owner=user, name="More")
    assert upload(client, other.id, ("c.txt", b"gamma")).status_code == 403
    document = Document.objects.filter(knowledge_base=base).first()
    assert client.delete(f"/api/v1/knowledge/documents/{document.id}/").status_code == 204
    assert upload(client, other.id, ("c.txt", b"gamma")).status_code == 202


@pytest.mark.django_db
def test_uploads_beyond_the_storage_quota_are_refused_with_nothing_stored(user, media):
    limits(storage_quota_bytes=100)
    client = client_for(user)
    base = knowledge_base_create(owner=user, name="Docs")
    assert upload(client, base.id, ("a.txt", b"a" * 60)).status_code == 202
    before = stored_files(media)

    response = upload(client, base.id, ("b.txt", b"b" * 41))
    assert_quota_error(response, kind="storage_bytes", limit=100, used=60, needed=41)
    assert "100" in response.json()["error"]["message"]  # readable: "100 bytes"
    assert stored_files(media) == before
    assert upload(client, base.id, ("b.txt", b"b" * 40)).status_code == 202  # exactly full


@pytest.mark.django_db
def test_bases_beyond_the_quota_are_refused(user):
    limits(knowledge_base_quota=1)
    client = client_for(user)
    url = "/api/v1/knowledge/bases/"
    assert client.post(url, {"name": "One"}, format="json").status_code == 201
    response = client.post(url, {"name": "Two"}, format="json")
    assert_quota_error(response, kind="knowledge_bases", limit=1, used=1, needed=1)
    assert KnowledgeBase.objects.filter(owner=user).count() == 1


@pytest.mark.django_db(transaction=True)
def test_parallel_uploads_and_creations_cannot_overshoot(user, media):
    limits(document_quota=3, knowledge_base_quota=2)
    base = knowledge_base_create(owner=user, name="Docs")
    statuses: list[int] = []
    start = threading.Barrier(8)

    def run(action) -> None:
        try:
            start.wait()
            statuses.append(action().status_code)
        finally:
            connections.close_all()

    def race(actions) -> list[int]:
        statuses.clear()
        threads = [threading.Thread(target=run, args=(a,)) for a in actions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        return sorted(statuses)

    uploads = [
        lambda n=n: upload(client_for(user), base.id, (f"{n}.txt", f"file {n}".encode()))
        for n in range(8)
    ]
    assert race(uploads) == [202] * 3 + [403] * 5
    assert Document.objects.filter(knowledge_base__owner=user).count() == 3
    assert len(stored_files(media)) == 3

    creations = [
        lambda n=n: client_for(user).post(
            "/api/v1/knowledge/bases/", {"name": f"B{n}"}, format="json"
        )
        for n in range(8)
    ]
    assert race(creations) == [201] + [403] * 7  # one slot was left beside "Docs"
    assert KnowledgeBase.objects.filter(owner=user).count() == 2


@pytest.mark.django_db
def test_staff_uploading_in_the_admin_are_not_limited(client, staff_user, user):
    limits(document_quota=1)
    base = knowledge_base_create(owner=user, name="Theirs")
    client.force_login(staff_user)
    response = client.post(
        reverse("admin:knowledge_knowledgebase_upload", args=[base.id]),
        {"files": [SimpleUploadedFile("a.txt", b"alpha"), SimpleUploadedFile("b.txt", b"beta")]},
    )
    assert response.status_code == 302
    assert Document.objects.filter(knowledge_base=base).count() == 2
    # The owner, past the quota now, cannot add more through the API.
    assert upload(client_for(user), base.id, ("c.txt", b"gamma")).status_code == 403


@pytest.mark.django_db
def test_me_shows_storage_limits_and_usage(user, django_capture_on_commit_callbacks):
    limits(storage_quota_bytes=1000, document_quota=10, knowledge_base_quota=3)
    client = client_for(user)
    base = knowledge_base_create(owner=user, name="Docs")
    before = client.get("/api/v1/me/").json()
    assert before["knowledge"] == {
        "storage_bytes": {"used": 0, "limit": 1000},
        "documents": {"used": 0, "limit": 10},
        "knowledge_bases": {"used": 1, "limit": 3},
    }
    assert before["plan"]["document_quota"] == 10
    with django_capture_on_commit_callbacks(execute=True):  # the cache is bumped on commit
        upload(client, base.id, ("a.txt", b"alpha"), ("b.txt", b"beta!"))
    after = client.get("/api/v1/me/").json()["knowledge"]
    assert after["storage_bytes"]["used"] == 10 and after["documents"]["used"] == 2


@pytest.mark.django_db
def test_staff_edit_the_storage_quotas_in_the_plan_admin(client, staff_user):
    client.force_login(staff_user)
    free = Plan.objects.get(tier="free")
    page = client.get(reverse("admin:throttling_plan_change", args=[free.id])).content.decode()
    for field in ("storage_quota_bytes", "document_quota", "knowledge_base_quota"):
        assert f'name="{field}"' in page
    assert f'value="{200 * 1024 * 1024}"' in page  # the free tier's seeded 200 MB
