"""Admin pages without a model (the cache page, the metrics page): added to the admin site's
URLs and to its index as a section of one link, so staff find them like any model."""

from __future__ import annotations

from collections.abc import Callable

from django.urls import path, reverse


def admin_page_install(
    site,
    *,
    route: str,
    url_name: str,
    view: Callable,
    section: str,
    link: str,
    section_label: str,
    object_name: str,
) -> None:
    """Serve `view(request, site=site)` at /admin/<route> (staff only, through the site's
    own `admin_view`) as `admin:<url_name>`, linked from the index under `section`."""
    original_urls = site.get_urls
    original_app_list = site.get_app_list

    def get_urls():
        page = site.admin_view(lambda request: view(request, site=site))
        return [path(route, page, name=url_name), *original_urls()]

    def get_app_list(request, app_label=None):
        app_list = original_app_list(request, app_label)
        if app_label is None and request.user.is_staff:
            url = reverse(f"admin:{url_name}", current_app=site.name)
            app_list.append(
                {
                    "name": section,
                    "app_label": section_label,
                    "app_url": url,
                    "has_module_perms": True,
                    "models": [
                        {
                            "name": link,
                            "object_name": object_name,
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
