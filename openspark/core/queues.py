"""Celery queue depths, for /metrics and the staff metrics page.

Read through kombu's public API (a queue declaration reports the message count), so the
broker's own key layout (priority lists, the transport's key prefix) stays kombu's business.
Counts are messages waiting in the broker, not those a worker already reserved. The broker is
Redis (settings.CELERY_BROKER_URL)."""

from __future__ import annotations

import logging

from django.conf import settings
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 2.0

# Settings that name a queue tasks are routed to (unset or empty: the default queue).
_QUEUE_SETTINGS = ("CHAT_TASK_QUEUE", "INGEST_TASK_QUEUE")


def queue_names() -> list[str]:
    """The default queue, the queues Celery is configured with, and those tasks are routed
    to by settings."""
    from openspark.celery import app

    names = {app.conf.task_default_queue}
    names.update(queue.name for queue in app.conf.task_queues or ())
    names.update(getattr(settings, name, "") for name in _QUEUE_SETTINGS)
    return sorted(name for name in names if name)


def queue_depths() -> dict[str, int] | None:
    """Messages waiting per queue; None when the broker cannot be reached."""
    from openspark.celery import app

    depths = {}
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
            for name in queue_names():
                with connection.channel() as channel:
                    # Not passive: kombu's Redis transport checks a passive declaration with an
                    # EXISTS that ignores its `global_keyprefix`, so every queue would look
                    # missing under a prefix. A declaration writes nothing to Redis (it only
                    # notes the queue's expiry options in the channel) and counts the same way.
                    depths[name] = channel.queue_declare(queue=name).message_count
    except Exception as exc:  # any broker failure: the scrape still answers
        logger.warning("Queue depths unavailable: %s", exc)
        return None
    return depths


class QueueDepthCollector:
    """`openspark_queue_depth{queue}` and `openspark_broker_up`, read at scrape time."""

    def collect(self):
        depths = queue_depths()
        up = GaugeMetricFamily("openspark_broker_up", "1 if the Celery broker answered.")
        up.add_metric([], 0 if depths is None else 1)
        yield up
        gauge = GaugeMetricFamily(
            "openspark_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        for name, depth in (depths or {}).items():
            gauge.add_metric([name], depth)
        yield gauge
