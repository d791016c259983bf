"""Real components for knowledge tests: the session's Milvus Lite server and standalone Milvus
2.3 server (the `milvus` package) for the server code path (both in tests/conftest.py), and
the real local embedding model, loaded once per session."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from knowledge import keyword
from knowledge.embedders import local_embedder
from knowledge.vectorstore import forget_vector_stores, get_vector_store

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _milvus(milvus_lite):
    yield milvus_lite
    forget_vector_stores()


@pytest.fixture(scope="session")
def embedder():
    model = local_embedder()
    model.embed(["warm up"])
    return model


@pytest.fixture(params=["lite", "server"])
def vector_backend(request, settings, milvus_lite):
    """Runs a test once against Milvus Lite and once against the Milvus server."""
    uri = milvus_lite if request.param == "lite" else request.getfixturevalue("milvus_server")
    settings.MILVUS_URI = uri
    forget_vector_stores()
    _clear_vectors()
    yield request.param
    settings.MILVUS_URI = milvus_lite
    forget_vector_stores()


def _clear_vectors() -> None:
    store = get_vector_store()
    for name in store.our_collections():
        if store.load(name):
            store.client.delete(name, filter="chunk_id >= 0")


@pytest.fixture(autouse=True)
def _own_rate_limit_counters(settings):
    """API tests here make more knowledge requests than one user's per-minute budget across
    the module; each test gets its own limiter keys (SQLite reuses user ids between tests)."""
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _fresh_vectors():
    """Database ids can be reused between tests (rolled-back SQLite sequences), so vectors of
    an earlier test must not be found under a new test's chunk ids."""
    _clear_vectors()
    keyword._indexes.clear()
    yield


def upload(name: str, content: bytes, content_type: str = "application/octet-stream"):
    return SimpleUploadedFile(name, content, content_type=content_type)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def wait_for(predicate, *, timeout: float = 60.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def ingest(base, user, name: str, content: bytes):
    """Upload through the service and run the pipeline in-process (what the worker does)."""
    from knowledge.models import Document
    from knowledge.services import document_vectorize, documents_upload

    [(document, task_id)] = documents_upload(
        knowledge_base=base, user=user, files=[upload(name, content)]
    )
    document_vectorize(document_id=document.id, task_id=task_id)
    return Document.objects.get(id=document.id)
