"""The cache page of the admin (/admin/cache/): stats and a purge button per namespace.

There is no model behind it, so it is added to the default admin site's URLs and index
(`install`, called from CoreConfig.ready()) instead of through a ModelAdmin."""

from __future__ import annotations

from pathlib import Path

from django.contrib import messages
from django.shortcuts import redirect
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from .namespaces import NAMESPACES, RATE_LIMIT
from .service import cache_purge
from .stats import stats_get

_TEMPLATE = Path(__file__).with_name("admin_page.html")


def cache_admin_view(request, *, site):
    if request.method == "POST":
        namespace = request.POST.get("purge", "")
        if namespace in NAMESPACES and namespace != RATE_LIMIT:
            deleted = cache_purge(namespace)
            message = ngettext(
                "Purged %(namespace)s (%(count)d key deleted).",
                "Purged %(namespace)s (%(count)d keys deleted).",
                deleted,
            )
            messages.success(request, message % {"namespace": namespace, "count": deleted})
        return redirect("admin:cache-stats")
    template = engines["django"].from_string(_TEMPLATE.read_text())
    context = {**site.each_context(request), "title": _("Cache"), "stats": stats_get()}
    return TemplateResponse(request, template, context)


def install(site) -> None:
    original_urls = site.get_urls
    original_app_list = site.get_app_list

    def get_urls():
        view = site.admin_view(lambda request: cache_admin_view(request, site=site))
        return [path("cache/", view, name="cache-stats"), *original_urls()]

    def get_app_list(request, app_label=None):
        app_list = original_app_list(request, app_label)
        if app_label is None and request.user.is_staff:
            url = reverse("admin:cache-stats", current_app=site.name)
            app_list.append(
                {
                    "name": gettext_lazy("Cache"),
                    "app_label": "cache",
                    "app_url": url,
                    "has_module_perms": True,
                    "models": [
                        {
                            "name": gettext_lazy("Cache statistics"),
                            "object_name": "CacheStatistics",
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
