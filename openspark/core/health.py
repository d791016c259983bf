"""Liveness and readiness: /readyz reports each dependency and answers 503 if any is down."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

CHECK_TIMEOUT_S = 2.0


def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _check_redis() -> str:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S
    )
    try:
        client.ping()
        return f"redis {client.info('server').get('redis_version', '?')}"
    finally:
        client.close()


def _check_broker() -> str:
    from openspark.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)
        return conn.transport_cls if isinstance(conn.transport_cls, str) else "ok"


def _check_vector_store() -> str:
    if not settings.MILVUS_URI:
        raise RuntimeError("MILVUS_URI is not configured")
    from pymilvus import MilvusClient

    client = MilvusClient(
        uri=settings.MILVUS_URI, token=settings.MILVUS_TOKEN, timeout=CHECK_TIMEOUT_S
    )
    try:
        client.list_collections(timeout=CHECK_TIMEOUT_S)
        return "milvus"
    finally:
        client.close()


CHECKS: dict[str, Callable[[], str]] = {
    "database": _check_database,
    "redis": _check_redis,
    "broker": _check_broker,
    "vector_store": _check_vector_store,
}


@never_cache
@require_GET
def readyz(request):
    report = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            detail = check()
            report[name] = {"status": "ok", "detail": detail}
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            report[name] = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
        report[name]["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    ready = all(item["status"] == "ok" for item in report.values())
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": report},
        status=200 if ready else 503,
    )
