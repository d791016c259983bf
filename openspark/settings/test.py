"""Test settings: real Redis (the machine's, or an embedded one started for the run)."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from openspark.embedded import ensure_test_redis

# Before base settings read them: without REDIS_URL, tests run on an embedded real Redis, and
# test keys get their own prefix so a run never touches the keys of a running product.
ensure_test_redis()
# One id per test run, inherited by the servers it spawns: concurrent runs on one machine get
# their own test database and Redis keys (queues included) and never consume each other's work.
RUN_ID = os.environ.setdefault("OPENSPARK_TEST_RUN_ID", str(os.getpid()))
os.environ.setdefault("REDIS_KEY_PREFIX", f"ostest{RUN_ID}")
# prometheus_client's multiprocess files of this run: pytest and the servers it starts (which
# inherit the variable) all write there, so /metrics on any of them sees every process. Set
# before prometheus_client is imported; made afresh by the process that starts the run.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    _metrics_dir = Path(tempfile.gettempdir()) / f"openspark-test-metrics-{RUN_ID}"
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)
    atexit.register(shutil.rmtree, _metrics_dir, ignore_errors=True)

from .base import *  # noqa: E402, F403
from .base import DATABASES, STATIC_ROOT, VAR_DIR, env  # noqa: E402

SECRET_KEY = "test-secret-key"
METRICS_TOKEN = "test-metrics-token"
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LANGUAGE_CODE = "en"

# Worker and ASGI subprocesses started by tests must see the same test database, so the
# SQLite test database is a file (an in-memory one exists only inside the pytest process).
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test_openspark_{RUN_ID}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_openspark_{RUN_ID}"}

# Fault tests put a stack's uploads on a small filesystem of their own (tests/faults/).
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(VAR_DIR / "test-media")))
LOGIN_RATE_LIMIT = "5/m"

STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing folder

# Subprocesses started by tests (ASGI server, Celery worker) set OPENSPARK_USE_TEST_DB=1 so
# they open the test database that pytest-django created, not the development one.
if env.bool("OPENSPARK_USE_TEST_DB", default=False):
    _db = DATABASES["default"]
    _db["NAME"] = _db["TEST"]["NAME"]

# Celery keys of a test run never mix with those of a product sharing the same Redis.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "global_keyprefix": f"ostest{RUN_ID}:",
}

# Test workers load the embedding model only when a test needs it (most never do).
KNOWLEDGE_WARM_EMBEDDER_ON_WORKER_START = env.bool(
    "KNOWLEDGE_WARM_EMBEDDER_ON_WORKER_START", default=False
)

# Retries back off for at most a second in tests (the policy is the same, only shorter), and
# a task gives up after two, so dead letters appear in seconds.
TASK_RETRY_BACKOFF = env.int("TASK_RETRY_BACKOFF", default=1)
TASK_RETRY_BACKOFF_MAX = env.int("TASK_RETRY_BACKOFF_MAX", default=1)
TASK_MAX_RETRIES = env.int("TASK_MAX_RETRIES", default=2)
