"""The knowledge-base page: a shell the browser fills from the knowledge API."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _

from openspark.core.pages import js_strings

KNOWLEDGE_JS_STRINGS = {
    "noBases": _("No knowledge bases yet. Create one to upload documents."),
    "noBase": _("This knowledge base does not exist or is not yours."),
    "owner": _("Owner"),
    "chunking": _("Chunk size/overlap"),
    "vis_private": _("Private"),
    "vis_shared": _("Shared with listed users"),
    "vis_public": _("Everyone"),
    "status_pending": _("Pending"),
    "status_processing": _("Processing"),
    "status_ready": _("Ready"),
    "status_failed": _("Failed"),
    "uploading": _("Uploading"),
    "noDocs": _("No documents yet."),
    "retry": _("Retry"),
    "reindex": _("Re-index"),
    "delete": _("Delete"),
    "download": _("Download"),
    "dismiss": _("Dismiss"),
    "confirmDeleteDoc": _("Delete this document? Its passages disappear from answers and search."),
    "confirmDeleteBase": _("Delete this knowledge base and all its documents?"),
    "searching": _("Searching…"),
    "noHits": _("No passage matches this query."),
    "score": _("Relevance"),
    "network": _("Network error — check your connection."),
}


@login_required
def knowledge_page(request):
    return render(request, "knowledge/bases.html", {"js_strings": js_strings(KNOWLEDGE_JS_STRINGS)})
