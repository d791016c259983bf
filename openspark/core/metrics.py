"""Prometheus metrics: the HTTP and Celery instruments, and the exposition at /metrics.

Every process (uvicorn workers, Celery workers and their pool children, beat) counts its own
events. With PROMETHEUS_MULTIPROC_DIR set (prometheus_client's multiprocess mode; the runner,
the test settings and the Docker image set it) each writes its samples to files in that folder,
and /metrics on any web process adds up every process of the machine. Without it, /metrics
shows its own process only: right for one process, wrong behind `uvicorn --workers N`.

Numbers Redis already holds for the whole fleet (cache statistics, queue depths) are not
counted a second time: the collectors in settings.METRICS_COLLECTORS read them at scrape time,
through the same functions the staff pages use.

Instruments are module-level, as prometheus_client intends: they are write-only from the
code's point of view (nothing reads them back to decide anything), so they carry no state a
test could trip over; tests compare values before and after."""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time

from django.conf import settings
from django.http import HttpResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder, start_http_server
from rest_framework.authentication import get_authorization_header

from .errors import error_response
from .state import on_reset

logger = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "openspark_http_requests_total",
    "HTTP requests answered, by method, URL name and status (websockets are not counted).",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "openspark_http_request_duration_seconds",
    "Time from the request entering Django to its response (its headers, for streams).",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TASK_DURATION = Histogram(
    "openspark_celery_task_duration_seconds",
    "Celery task run time, by task name and final state (SUCCESS, FAILURE, RETRY...).",
    ["task", "state"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
)
TASK_FAILURES = Counter(
    "openspark_celery_task_failures_total",
    "Celery tasks that raised, by task name and exception class.",
    ["task", "exception"],
)


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


class _ThisProcess:
    """The default registry as one collector (single-process mode)."""

    def collect(self):
        return REGISTRY.collect()


def metrics_registry(*, fleet_collectors: bool = True) -> CollectorRegistry:
    """What one scrape reports: every process of this machine (or this process alone without
    multiprocess mode), plus, with `fleet_collectors`, settings.METRICS_COLLECTORS."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    if fleet_collectors:
        for path in settings.METRICS_COLLECTORS:
            registry.register(import_string(path)())
    return registry


# --- /metrics --------------------------------------------------------------------------------

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


def _access_refused(request) -> HttpResponse | None:
    """None when the caller may read the metrics: a scraper with the METRICS_TOKEN bearer
    token, or a staff session. A wrong or unusable token is refused even with a session,
    so a misconfigured scraper is noticed."""
    parts = get_authorization_header(request).split()
    if parts and parts[0].lower() == b"bearer":
        token = settings.METRICS_TOKEN.encode()
        if token and len(parts) == 2 and hmac.compare_digest(parts[1], token):
            return None
        return error_response(
            "not_authenticated", "Invalid metrics token.", 401, headers=_CHALLENGE
        )
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return None
    if user.is_authenticated:
        return error_response("permission_denied", "Metrics are for staff only.", 403)
    return error_response(
        "not_authenticated", "Authentication credentials were not provided.", 401,
        headers=_CHALLENGE,
    )  # fmt: skip


@never_cache
@require_GET
def metrics_view(request):
    if (refused := _access_refused(request)) is not None:
        return refused
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(metrics_registry()), content_type=content_type)


# --- Celery tasks ----------------------------------------------------------------------------


class _TaskClock:
    """When each task running in this process started (task id → perf_counter)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.lock = threading.Lock()
        on_reset(self.clear)

    def clear(self) -> None:
        with self.lock:
            self.started.clear()

    def start(self, task_id: str) -> None:
        with self.lock:
            self.started[task_id] = time.perf_counter()

    def stop(self, task_id: str) -> float | None:
        with self.lock:
            started = self.started.pop(task_id, None)
        return None if started is None else time.perf_counter() - started


_task_clock = _TaskClock()


def _task_prerun(*, task_id=None, **_kwargs) -> None:
    if task_id:
        _task_clock.start(task_id)


def _task_postrun(*, task_id=None, task=None, state=None, **_kwargs) -> None:
    seconds = _task_clock.stop(task_id) if task_id else None
    if seconds is not None and task is not None:
        TASK_DURATION.labels(task.name, state or "UNKNOWN").observe(seconds)


def _task_failure(*, sender=None, exception=None, **_kwargs) -> None:
    name = getattr(sender, "name", None) or "unknown"
    TASK_FAILURES.labels(name, type(exception).__name__).inc()


def _worker_ready(**_kwargs) -> None:
    """On a worker host without a web server: serve this machine's process metrics (no fleet
    collectors: the web servers report those) when METRICS_WORKER_PORT is set."""
    if settings.METRICS_WORKER_PORT:
        start_http_server(
            settings.METRICS_WORKER_PORT,
            addr=settings.METRICS_WORKER_ADDR,
            registry=metrics_registry(fleet_collectors=False),
        )
        logger.info(
            "Worker metrics at http://%s:%s/metrics",
            settings.METRICS_WORKER_ADDR,
            settings.METRICS_WORKER_PORT,
        )


def task_signals_connect() -> None:
    """Celery's task signals fire in the process that runs the task (a pool child under
    prefork); connected once per process at Django startup."""
    from celery.signals import task_failure, task_postrun, task_prerun, worker_ready

    task_prerun.connect(_task_prerun, weak=False, dispatch_uid="openspark-metrics-prerun")
    task_postrun.connect(_task_postrun, weak=False, dispatch_uid="openspark-metrics-postrun")
    task_failure.connect(_task_failure, weak=False, dispatch_uid="openspark-metrics-failure")
    worker_ready.connect(_worker_ready, weak=False, dispatch_uid="openspark-metrics-worker")


def http_route(request) -> str:
    """The URL's name (bounded: no ids in it); "static" or "unmatched" when no view ran."""
    match = request.resolver_match
    if match is not None:
        return match.view_name  # the URL name, else the view's dotted path
    if request.path.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "unmatched"


def http_request_observe(*, request, status: int, seconds: float) -> None:
    method = request.method if request.method in _METHODS else "other"
    route = http_route(request)
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)
