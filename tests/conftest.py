import contextlib
import io
import os
import shutil
import time
import urllib.request

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from openspark.core.state import process_state_reset
from openspark.embedded import free_port, start_milvus_lite
from tests.factories import UserFactory
from tests.live import (
    redis_delete_matching,
    start_asgi_server,
    start_celery_worker,
    subprocess_env,
)
from tests.smtp import SMTPTestServer
from throttling.plans import seed_default_plans

# Tests whose subject is not the database: browsers, model clients, process faults and
# load through HTTP, hostile uploads, the run command, deployment files, the embedder. CI
# runs them in its first pass (SQLite) and its PostgreSQL pass deselects them with
# `-m "not once"` (.ci/run), to keep both passes within the time budget. Everything that
# reads or writes through the ORM in an interesting way (the API, fuzzing, the
# authorisation matrix, the scale-out test, PostgreSQL faults) runs in both.
ONCE = (
    "tests/ui/",
    "tests/llm/",
    "tests/e2e/",
    "tests/faults/test_disk_full.py",
    "tests/faults/test_milvus.py",
    "tests/faults/test_model_server.py",
    "tests/faults/test_redis.py",
    "tests/faults/test_worker_killed.py",
    "tests/reliability/test_load_short.py",
    "tests/knowledge/test_embedders.py",
    "tests/knowledge/test_linear_text.py",
    "tests/knowledge/test_milvus_keepalive.py",
    "tests/knowledge/test_warm_up.py",
    "tests/ops/test_channel_layer_shards.py",
    "tests/ops/test_flower.py",
    "tests/ops/test_metrics_live.py",
    "tests/ops/test_s3_storage.py",
    "tests/test_compose.py",
    "tests/test_deploy.py",
    "tests/test_translations.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(ONCE):
            item.add_marker(pytest.mark.once)


# The chat stack's live servers (GLM test server, chat worker, chat ASGI server), one per run.
pytest_plugins = ["tests.chat_live"]

PASSWORD = "pass-word-123"


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with no cached values and no rate-limit counters under this run's key
    prefix (requests from 127.0.0.1 would otherwise share one IP budget across the whole run),
    and with no per-process state left by the previous one (memos, breakers, snapshots)."""
    process_state_reset()
    cache.delete_pattern("*")
    redis_delete_matching("rl:*")
    yield


@pytest.fixture(autouse=True)
def _default_plans(request):
    """Transactional tests flush every table, seeded plans included; put them back."""
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or (marker and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
        seed_default_plans()


@pytest.fixture(scope="session")
def live_logs(tmp_path_factory):
    return tmp_path_factory.mktemp("live-logs")


@pytest.fixture(scope="session")
def milvus_lite(tmp_path_factory):
    """Milvus Lite's gRPC server for the session. Its URI is exported before any worker or ASGI
    server starts (they copy os.environ), so every process shares the same vectors."""
    from django.conf import settings

    service = start_milvus_lite(tmp_path_factory.mktemp("milvus") / "data")
    os.environ["MILVUS_URI"] = service.url
    settings.MILVUS_URI = service.url
    yield service.url
    service.stop()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus 2.3 standalone server (dense search, partition key, delete; no BM25)."""
    from milvus import MilvusServer

    server = MilvusServer()
    base = tmp_path_factory.mktemp("milvus-server")
    server.set_base_dir(str(base))
    server.listen_port = free_port()
    server.wait_for_started = False
    with contextlib.redirect_stdout(io.StringIO()):
        server.start()
    # Fail fast when it dies at start (e.g. a port held by a killed run's server) instead of
    # waiting out the package's own wait, which does not notice a dead process.
    health = f"http://127.0.0.1:{server.webservice_port}/healthz"
    deadline = time.monotonic() + 180
    while True:
        if server.server_proc.poll() is not None:
            log = base / "logs" / "milvus-stdout.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"Milvus server exited with {server.server_proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=5) as response:
            if b"OK" in response.read():
                time.sleep(1)  # as the package does: healthy a moment before serving
                break
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail("Milvus server did not become healthy in 180 s")
        time.sleep(0.2)
    yield f"http://127.0.0.1:{server.listen_port}"
    with contextlib.suppress(Exception):
        server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def _smtp_server():
    with SMTPTestServer() as server:
        yield server


@pytest.fixture
def smtp_server(_smtp_server):
    """The SMTP relay the worker mails through; each test starts with an empty mailbox."""
    _smtp_server.reset()
    yield _smtp_server
    _smtp_server.reset()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, live_logs, milvus_lite, _smtp_server):
    """A real Celery worker on the test database, consuming every queue (threads pool, so no
    time or memory limits); tests using it need `transactional_db`. It mails through the
    session's SMTP test server (`smtp_server`)."""
    worker = start_celery_worker(live_logs, env=subprocess_env(EMAIL_URL=_smtp_server.url))
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def asgi_server(django_db_setup, django_db_blocker, live_logs, milvus_lite):
    """A real uvicorn serving openspark.asgi on the test database."""
    server = start_asgi_server(live_logs)
    yield server
    server.stop()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def auth_client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def session_client(user):
    """Logged in with a real session, as the browser is (API-key management needs one)."""
    client = APIClient()
    client.force_login(user)
    return client
