"""The chat page: a shell the browser fills from the REST API and the /ws/chat/ socket."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _

from accounts.selectors import user_profile_get
from openspark.core.pages import js_strings
from openspark.llm import provider_status

CHAT_JS_STRINGS = {
    "page": _("Page"),
    "noMatches": _("No matching conversations."),
    "noConversations": _("No conversations yet."),
    "untitled": _("New conversation"),
    "rename": _("Rename"),
    "delete": _("Delete"),
    "newTitle": _("New title"),
    "confirmDelete": _("Delete this conversation and its messages?"),
    "notFound": _("This conversation does not exist or is not yours."),
    "emptyChat": _("Ask anything. Attach knowledge bases to get answers with cited sources."),
    "you": _("You"),
    "assistant": _("Assistant"),
    "thinking": _("Thinking…"),
    "sources": _("Sources"),
    "failed": _("The reply failed."),
    "retry": _("Retry"),
    "stopped": _("Stopped."),
    "copy": _("Copy"),
    "regenerate": _("Regenerate"),
    "good": _("Good answer"),
    "bad": _("Bad answer"),
    "offlineBadge": _("offline"),
    "score": _("Relevance"),
    "reconnecting": _("Connection lost — reconnecting…"),
    "rateLimited": _("You are sending messages too fast. Try again in %s s."),
    "noKbs": _("No knowledge bases you can read yet."),
    "dismiss": _("Dismiss"),
    "busy": _("A reply is still being written — wait for it or stop it (Esc)."),
    "network": _("Network error — check your connection."),
    "defaultAssistant": _("Default assistant"),
    "suggestions": _("Suggested questions"),
}


@login_required
def chat_page(request):
    return render(
        request,
        "conversations/chat.html",
        {
            "profile": user_profile_get(user=request.user),
            "llm": provider_status(),
            "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "js_strings": js_strings(CHAT_JS_STRINGS),
        },
    )
