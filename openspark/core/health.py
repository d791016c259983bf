"""Liveness (/healthz) and readiness (/readyz: database, Redis, broker, vector store; 503 if
any is down).

/readyz is public (load balancers, compose healthchecks and `make run` poll it), so:
- anyone gets the status and each dependency's ok/down, never versions or error text, and
  that answer is reused for READYZ_CACHE_SECONDS, so polling cannot hammer the dependencies;
- staff (session) and callers presenting HEALTH_TOKEN (`Authorization: Bearer <token>` or
  `X-Health-Token`) get a fresh run with versions, errors and latencies;
- checks go through long-lived clients (the cache's Redis client, one broker client and one
  Milvus client per URL), and one run at a time per process: concurrent callers wait for the
  run in progress and share its result."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.db import DatabaseError, connection
from django.dispatch import receiver
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_redis import get_redis_connection

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0


def healthz(request):
    return JsonResponse({"status": "ok"})


class _Clients:
    """Clients kept for the checks, per URL; a Milvus client is replaced after a failure."""

    def __init__(self) -> None:
        self.broker: dict[str, redis.Redis] = {}
        self.milvus: dict[tuple[str, str], object] = {}

    def broker_client(self, url: str) -> redis.Redis:
        client = self.broker.get(url)
        if client is None:
            client = self.broker[url] = redis.Redis.from_url(
                url, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S
            )
        return client

    def milvus_client(self, uri: str, token: str):
        client = self.milvus.get((uri, token))
        if client is None:
            from pymilvus import MilvusClient

            client = self.milvus[(uri, token)] = MilvusClient(
                uri=uri,
                token=token,
                timeout=CHECK_TIMEOUT_S,
                grpc_options=settings.MILVUS_GRPC_OPTIONS,
            )
        return client

    def milvus_forget(self, uri: str, token: str) -> None:
        client = self.milvus.pop((uri, token), None)
        if client is not None:
            try:
                client.close()
            except Exception:  # a client of a server that is gone may fail to close
                logger.debug("closing the readiness Milvus client failed", exc_info=True)

    def forget(self) -> None:
        for client in self.broker.values():
            client.close()
        self.broker.clear()
        for uri, token in list(self.milvus):
            self.milvus_forget(uri, token)


_clients = _Clients()


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _check_redis() -> str:
    client = get_redis_connection("default")  # the cache's client and its connection pool
    return f"redis {client.info('server').get('redis_version', '?')}"


def _check_broker() -> str:
    # The product's broker is Redis (CELERY_BROKER_URL, by default REDIS_URL); a PING on a
    # kept client, where a kombu connection per check would build a connection pool each time.
    from openspark.celery import app

    _clients.broker_client(app.conf.broker_url).ping()
    return "redis"


def _check_vector_store() -> str:
    if not settings.MILVUS_URI:
        raise RuntimeError("MILVUS_URI is not configured")
    uri, token = settings.MILVUS_URI, settings.MILVUS_TOKEN
    try:
        _clients.milvus_client(uri, token).list_collections(timeout=CHECK_TIMEOUT_S)
    except Exception:
        _clients.milvus_forget(uri, token)
        raise
    return "milvus"


CHECKS: dict[str, Callable[[], str]] = {
    "database": _check_database,
    "redis": _check_redis,
    "broker": _check_broker,
    "vector_store": _check_vector_store,
}


class _Runs:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = 0.0  # time.monotonic() of the last run
        self.report: dict | None = None


_runs = _Runs()


def _run_checks() -> dict:
    report = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            report[name] = {"status": "ok", "detail": check()}
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            report[name] = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
        report[name]["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return report


def readiness_report(*, max_age: float) -> dict:
    """The checks' results, no older than `max_age` seconds (0: a fresh run)."""
    with _runs.lock:
        if _runs.report is not None and time.monotonic() - _runs.at < max_age:
            return _runs.report
        report = _run_checks()
        previous = _runs.report or {}
        for name, item in report.items():
            if item["status"] != previous.get(name, {}).get("status", "ok"):
                logger.warning(
                    "Readiness: %s is %s %s", name, item["status"], item.get("error", "")
                )
        _runs.at, _runs.report = time.monotonic(), report
        return report


@receiver(setting_changed)
def _settings_changed(**_kwargs) -> None:
    """A changed setting (tests) may point a check elsewhere: run afresh, with new clients."""
    with _runs.lock:
        _runs.report = None
        _clients.forget()


def _offered_token(request) -> str:
    scheme, _space, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    return request.headers.get("X-Health-Token", "")


def _may_see_details(request) -> bool:
    token = settings.HEALTH_TOKEN
    if token and hmac.compare_digest(_offered_token(request).encode(), token.encode()):
        return True
    try:
        return request.user.is_staff
    except DatabaseError:  # the session's user cannot be read while the database is down
        return False


@never_cache
@require_GET
def readyz(request):
    details = _may_see_details(request)
    report = readiness_report(max_age=0 if details else settings.READYZ_CACHE_SECONDS)
    ready = all(item["status"] == "ok" for item in report.values())
    checks = (
        report if details else {name: {"status": item["status"]} for name, item in report.items()}
    )
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
    )
