"""The assistants page: a shell the browser fills from the assistants API."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _

from openspark.core.pages import js_strings

ASSISTANTS_JS_STRINGS = {
    "noAssistants": _("No assistants yet."),
    "yours": _("Yours"),
    "by": _("by %s"),
    "startChat": _("Start chat"),
    "edit": _("Edit"),
    "delete": _("Delete"),
    "confirmDelete": _(
        "Delete this assistant? Its conversations continue with the default assistant."
    ),
    "newAssistant": _("New assistant"),
    "editAssistant": _("Edit assistant"),
    "defaultModel": _("Default (%s)"),
    "noKbs": _("No knowledge bases you can read yet."),
    "vis_private": _("Only me"),
    "vis_listed": _("Listed users"),
    "vis_everyone": _("Everyone"),
    "sourcesOnly": _("Answers only from its sources"),
    "network": _("Network error — check your connection."),
}


@login_required
def assistants_page(request):
    return render(
        request, "assistants/assistants.html", {"js_strings": js_strings(ASSISTANTS_JS_STRINGS)}
    )
