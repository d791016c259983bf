"""The admin's metrics page (/admin/metrics/): requests and 429s per minute by layer, top
limited users, cache hit rate by namespace and queue depths, drawn with the vendored Chart.js.

It reads the numbers the staff APIs and /metrics read: the limiter's per-minute statistics
(`selectors.limiter_stats_get`, as `GET rate-limit/stats/`), the cache's (`stats_get`, as
`GET cache/stats/` and the cache collector of /metrics) and the broker's queue depths
(`queue_depths`, as the queue collector of /metrics). No model behind it, so, like the cache
page, it is added to the admin site's URLs and index (`install`, from ThrottlingConfig.ready())."""

from __future__ import annotations

from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from redis import RedisError

from openspark.core.cache.stats import stats_get
from openspark.core.pages import js_strings
from openspark.core.queues import queue_depths

from .limiter import stats_flush
from .selectors import limiter_stats_get

MINUTES = 30

METRICS_JS_STRINGS = {
    "requests": gettext_lazy("Requests per minute"),
    "allowed": gettext_lazy("Allowed"),
    "refused": gettext_lazy("Refused (429)"),
    "refusedByLayer": gettext_lazy("429s per minute by layer"),
    "topUsers": gettext_lazy("Most limited users (last 30 minutes)"),
    "refusals": gettext_lazy("Refusals"),
    "cacheHitRate": gettext_lazy("Cache hit rate by namespace"),
    "hitRate": gettext_lazy("Hit rate (%)"),
    "queues": gettext_lazy("Queue depth"),
    "waiting": gettext_lazy("Messages waiting"),
    "noData": gettext_lazy("No data yet."),
}


def dashboard_data_get(*, minutes: int = MINUTES) -> dict:
    """What the page's charts draw; each source reports `None` when its store is down."""
    return {
        "limiter": _limiter_series(minutes=minutes),
        "cache": [
            {
                "namespace": ns["name"],
                "hits": ns["hits"],
                "misses": ns["misses"],
                "hit_ratio": ns["hit_ratio"],
            }
            for ns in stats_get()["namespaces"]
        ],
        "queues": queue_depths(),
    }


def _limiter_series(*, minutes: int) -> dict | None:
    try:
        stats_flush()  # this process's last second of counters (others: within 1 s)
        stats = limiter_stats_get(minutes=minutes)
    except RedisError:
        return None
    rows = stats["minutes"]
    refusing = sorted(layer for layer, total in stats["totals"].items() if total["denied"])
    return {
        "minutes": [row["minute"].strftime("%H:%M") for row in rows],
        "allowed": [row["requests"]["allowed"] for row in rows],
        "denied": [row["requests"]["denied"] for row in rows],
        "denied_by_layer": {
            layer: [row["layers"].get(layer, {}).get("denied", 0) for row in rows]
            for layer in refusing
        },
        "top_users": [
            {"label": user["username"] or f"#{user['user_id']}", "denied": user["denied"]}
            for user in stats["top_limited_users"]
        ],
        "top_ips": stats["top_limited_ips"],
    }


def metrics_admin_view(request, *, site):
    data = dashboard_data_get()
    context = {
        **site.each_context(request),
        "title": _("Metrics"),
        "data": data,
        "js_strings": js_strings(METRICS_JS_STRINGS),
    }
    return TemplateResponse(request, "admin/throttling/metrics.html", context)


def install(site) -> None:
    original_urls = site.get_urls
    original_app_list = site.get_app_list

    def get_urls():
        view = site.admin_view(lambda request: metrics_admin_view(request, site=site))
        return [path("metrics/", view, name="metrics"), *original_urls()]

    def get_app_list(request, app_label=None):
        app_list = original_app_list(request, app_label)
        if app_label is None and request.user.is_staff:
            url = reverse("admin:metrics", current_app=site.name)
            app_list.append(
                {
                    "name": gettext_lazy("Metrics"),
                    "app_label": "metrics",
                    "app_url": url,
                    "has_module_perms": True,
                    "models": [
                        {
                            "name": gettext_lazy("Requests, limits, cache and queues"),
                            "object_name": "Metrics",
                            "admin_url": url,
                            "add_url": None,
                            "view_only": True,
                            "perms": {"view": True},
                        }
                    ],
                }
            )
        return app_list

    site.get_urls = get_urls
    site.get_app_list = get_app_list
