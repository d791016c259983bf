"""The disk for uploads full: the stack's MEDIA_ROOT is a real 2 MB tmpfs, filled until an
upload cannot fit. The upload answers 507 `insufficient_storage` in the error shape, nothing
of it remains (no document row, no task, no file, not even the files of the same request
that did fit), and once space is freed the same upload is accepted and ends `ready`."""

import os

import pytest

from knowledge.models import Document
from openspark.core.models import TaskRecord
from tests.faults.conftest import fault_client

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _files_under(root) -> set[str]:
    return {
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _dirs, names in os.walk(root)
        for name in names
    }


def test_a_full_upload_disk_is_a_507_and_leaves_nothing_behind(stack, small_disk, user):
    api = fault_client(stack.asgi.url, user)
    base = api.create_base("Disk full", chunk_size=4000)
    before = _files_under(small_disk)
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 32 * 1024))  # leaves 32 KB
    small = ("small.txt", b"Small notes about muons. " * 40)  # 1 KB: fits
    large = ("large.txt", b"Large notes about neutrinos and their flavours. " * 2000)  # 98 KB
    try:
        response = api.post(
            f"/api/v1/knowledge/bases/{base['id']}/documents/",
            files=[("file", small), ("file", large)],
        )
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert error["code"] == "insufficient_storage"
        assert error["details"] == {"filename": "large.txt"}
        assert not Document.objects.filter(knowledge_base_id=base["id"]).exists()
        assert not TaskRecord.objects.filter(name="vectorize_document", user=user).exists()
        assert _files_under(small_disk) == before | {"filler"}  # nothing half-written
        assert api.get(f"/api/v1/knowledge/bases/{base['id']}/documents/").json()["count"] == 0
    finally:
        filler.unlink()

    again = api.post(
        f"/api/v1/knowledge/bases/{base['id']}/documents/", files=[("file", small), ("file", large)]
    )
    assert again.status_code == 202, again.text
    for document in again.json()["documents"]:
        assert api.settle_document(document["id"])["status"] == "ready"
