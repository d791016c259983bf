"""Uploads on S3-compatible storage (MEDIA_STORAGE=s3): a real uvicorn and a real Celery worker,
each with its own empty MEDIA_ROOT (as on two machines), against a local S3-compatible server
(moto's; S3 itself is outside this machine). Upload through the API, ingest in the worker,
search, download, delete: the file lives in the bucket only, and is gone from it after."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from accounts.services import api_key_create
from openspark.embedded import free_port
from tests.factories import UserFactory
from tests.live import ROOT, start_asgi_server, start_celery_worker, subprocess_env

BUCKET = "openspark-test-media"
# Its own ingest queue: no other worker of the run (whose storage is local) may take the task.
INGEST_QUEUE = f"ostest-s3-ingest-{uuid.uuid4().hex[:8]}"
TEXT = "\n\n".join(
    f"Chapter {n}. The cartographer of Qinghai drew the salt lake at dawn, page {n}."
    for n in range(30)
)


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    _bucket_client(url).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def _bucket_client(url: str):
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
        region_name="us-east-1",
    )


def _objects(url: str) -> dict[str, bytes]:
    client = _bucket_client(url)
    listing = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    body = {o["Key"]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"] for o in listing}
    return {key: stream.read() for key, stream in body.items()}


@pytest.fixture(scope="module")
def s3_servers(django_db_setup, live_logs, milvus_lite, s3_endpoint, tmp_path_factory):
    """A web server and an ingest worker that share nothing on disk, only the bucket."""
    media = {name: tmp_path_factory.mktemp(f"media-{name}") for name in ("web", "worker")}

    def env(name: str) -> dict[str, str]:
        return subprocess_env(
            MEDIA_STORAGE="s3",
            MEDIA_ROOT=str(media[name]),
            AWS_STORAGE_BUCKET_NAME=BUCKET,
            AWS_S3_ENDPOINT_URL=s3_endpoint,
            AWS_ACCESS_KEY_ID="test-key",
            AWS_SECRET_ACCESS_KEY="test-secret",
            AWS_S3_REGION_NAME="us-east-1",
            INGEST_TASK_QUEUE=INGEST_QUEUE,
        )

    web = start_asgi_server(live_logs, env=env("web"))
    worker = start_celery_worker(live_logs, env=env("worker"), concurrency=2, queues=[INGEST_QUEUE])
    yield web, worker, media
    worker.stop()
    web.stop()


def _wait_ready(client: httpx.Client, document_id, worker) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/knowledge/documents/{document_id}/")
        if response.status_code == 200 and response.json()["status"] in ("ready", "failed"):
            return response.json()
        time.sleep(1)  # well inside the plan's request limit (the first run loads the model)
    raise AssertionError(f"document not processed in 120 s:\n{worker.log()}")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_upload_ingest_search_download_delete_through_the_bucket(s3_servers, s3_endpoint):
    web, worker, media = s3_servers
    _key, raw_key = api_key_create(user=UserFactory(), name="s3")
    client = httpx.Client(
        base_url=web.url, headers={"Authorization": f"Bearer {raw_key}"}, timeout=60
    )
    base = client.post("/api/v1/knowledge/bases/", json={"name": "Maps"}).json()
    uploaded = client.post(
        f"/api/v1/knowledge/bases/{base['id']}/documents/",
        files={"file": ("salt-lake.txt", TEXT.encode(), "text/plain")},
    )
    assert uploaded.status_code == 202, uploaded.text
    document_id = uploaded.json()["documents"][0]["id"]

    # Stored in the bucket, nowhere on either process's disk.
    objects = _objects(s3_endpoint)
    assert list(objects.values()) == [TEXT.encode()]
    (key,) = objects
    assert key.startswith("documents/") and key.endswith(".txt")

    # The worker, whose MEDIA_ROOT never saw the file, reads it from the bucket.
    document = _wait_ready(client, document_id, worker)
    assert document["status"] == "ready" and document["chunk_count"] >= 1, worker.log()
    found = client.post(
        "/api/v1/knowledge/search",
        # Keyword mode: the web server needs no embedding model for it (the worker loaded one
        # to ingest), which keeps this test short; retrieval itself is tested elsewhere.
        json={
            "query": "cartographer salt lake",
            "knowledge_base_ids": [base["id"]],
            "mode": "keyword",
        },
    ).json()["results"]
    assert found and found[0]["document_id"] == document_id

    download = client.get(f"/api/v1/knowledge/documents/{document_id}/file")
    assert download.status_code == 200, download.text
    assert download.content == TEXT.encode()
    assert download.headers["content-disposition"].startswith("attachment;")
    assert 'filename="salt-lake.txt"' in download.headers["content-disposition"]
    assert not any(p.is_file() for root in media.values() for p in root.rglob("*"))

    # Someone else cannot download it.
    _other, other_key = api_key_create(user=UserFactory(), name="other")
    refused = httpx.get(
        f"{web.url}/api/v1/knowledge/documents/{document_id}/file",
        headers={"Authorization": f"Bearer {other_key}"},
    )
    assert refused.status_code == 404

    assert client.delete(f"/api/v1/knowledge/documents/{document_id}/").status_code == 204
    assert _objects(s3_endpoint) == {}
    assert client.get(f"/api/v1/knowledge/documents/{document_id}/file").status_code == 404


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_file_the_bucket_lost_is_a_404_not_an_error(s3_servers, s3_endpoint):
    web, worker, _media = s3_servers
    _key, raw_key = api_key_create(user=UserFactory(), name="s3")
    client = httpx.Client(
        base_url=web.url, headers={"Authorization": f"Bearer {raw_key}"}, timeout=60
    )
    base = client.post("/api/v1/knowledge/bases/", json={"name": "Lost"}).json()
    uploaded = client.post(
        f"/api/v1/knowledge/bases/{base['id']}/documents/",
        files={"file": ("lost.md", b"# Lost\n\nA page that storage will lose.", "text/markdown")},
    ).json()
    document_id = uploaded["documents"][0]["id"]
    _wait_ready(client, document_id, worker)
    for key in _objects(s3_endpoint):
        _bucket_client(s3_endpoint).delete_object(Bucket=BUCKET, Key=key)
    missing = client.get(f"/api/v1/knowledge/documents/{document_id}/file")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.delete(f"/api/v1/knowledge/documents/{document_id}/").status_code == 204


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MEDIA_STORAGE": "nfs"}, "MEDIA_STORAGE"),
        ({"MEDIA_STORAGE": "s3"}, "AWS_STORAGE_BUCKET_NAME"),
    ],
)
def test_a_storage_misconfiguration_stops_the_start(env, named):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT, env=subprocess_env(**env), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and named in result.stderr, result.stderr[-2000:]
