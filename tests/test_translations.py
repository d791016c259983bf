"""Every string the pages hand to their scripts has a Simplified Chinese translation (strings
marked with an alias gettext does not know are silently left out of the catalogue)."""

import pytest
from django.utils import translation

from accounts.views import ACCOUNT_JS_STRINGS
from assistants.pages import ASSISTANTS_JS_STRINGS
from conversations.pages import CHAT_JS_STRINGS
from knowledge.admin import EVALUATION_JS_STRINGS
from knowledge.pages import KNOWLEDGE_JS_STRINGS
from openspark.core.pages import NOTIFICATION_JS_STRINGS, js_strings
from throttling.dashboard import METRICS_JS_STRINGS


@pytest.mark.parametrize(
    "strings",
    [
        ACCOUNT_JS_STRINGS,
        ASSISTANTS_JS_STRINGS,
        CHAT_JS_STRINGS,
        KNOWLEDGE_JS_STRINGS,
        METRICS_JS_STRINGS,
        NOTIFICATION_JS_STRINGS,
        EVALUATION_JS_STRINGS,
    ],
    ids=[
        "account",
        "assistants",
        "chat",
        "knowledge",
        "admin-metrics",
        "notifications",
        "admin-evaluation",
    ],
)
def test_page_strings_are_translated(strings):
    with translation.override("en"):
        english = js_strings(strings)
    with translation.override("zh-hans"):
        chinese = js_strings(strings)
    untranslated = [english[k] for k in strings if chinese[k] == english[k]]
    assert untranslated == []
