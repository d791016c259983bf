"""The cache page of the admin (/admin/cache/): stats and a purge button per namespace.

There is no model behind it, so it is added to the default admin site's URLs and index
(`install`, called from CoreConfig.ready()) instead of through a ModelAdmin."""

from __future__ import annotations

from pathlib import Path

from django.contrib import messages
from django.shortcuts import redirect
from django.template import engines
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ..admin_pages import admin_page_install
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
    admin_page_install(
        site,
        route="cache/",
        url_name="cache-stats",
        view=cache_admin_view,
        section=gettext_lazy("Cache"),
        link=gettext_lazy("Cache statistics"),
        section_label="cache",
        object_name="CacheStatistics",
    )
