"""Helpers for the server-rendered pages."""

from __future__ import annotations

from collections.abc import Mapping

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _


def js_strings(strings: Mapping) -> dict[str, str]:
    """A page's UI strings for its script (rendered with `json_script`), translated now, in
    the request's language (the mappings hold lazy translations)."""
    return {key: str(value) for key, value in strings.items()}


NOTIFICATION_JS_STRINGS = {
    "empty": _("No notifications yet."),
    "markAllRead": _("Mark all as read"),
    "markRead": _("Mark as read"),
    "loadMore": _("Show older"),
    "unread": _("unread"),
    "newNotification": _("New notification"),
}


@login_required
def notifications_page(request):
    """The user's notifications, filled by static/js/notifications.js from the REST API."""
    return render(
        request, "notifications.html", {"js_strings": js_strings(NOTIFICATION_JS_STRINGS)}
    )
