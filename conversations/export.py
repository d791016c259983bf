"""A conversation as a file: Markdown to read, JSON to process. Pure functions over rows the
selector read (`conversation_export_get`); every message in order, each reply with its sources.

The Markdown is English whatever the UI language: a file outlives the session it came from,
and the JSON's keys are English anyway."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from django.utils import timezone

from .models import Conversation, Message
from .serializers import conversation_data, message_data

JSON_FORMAT = "openspark.conversation.v1"


def _when(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _quote(text: str) -> str:
    """One blockquote line: a snippet's own line breaks and markup stay inside it."""
    return "> " + " ".join(text.split())


def _assistant_data(conversation: Conversation) -> dict | None:
    assistant = conversation.assistant
    if assistant is None:
        return None
    return {
        "id": assistant.id,
        "name": assistant.name,
        "icon": assistant.icon,
        "description": assistant.description,
    }


def conversation_markdown(*, conversation: Conversation, messages: Sequence[Message]) -> str:
    title = " ".join((conversation.title or f"Conversation {conversation.id}").split())
    assistant = conversation.assistant
    lines = [f"# {title}", ""]
    lines.append(f"- Assistant: {assistant.name if assistant else 'Default assistant'}")
    lines.append(f"- Started: {_when(conversation.created_at)}")
    lines.append(f"- Exported: {_when(timezone.now())}")
    for message in messages:
        who = "You" if message.role == Message.Role.USER else "Assistant"
        lines += ["", f"## {who} · {_when(message.created_at)}", ""]
        lines.append(message.content.strip() or "_(no text)_")
        if message.role == Message.Role.ASSISTANT and message.status != Message.Status.COMPLETED:
            note = message.status + (f": {message.error}" if message.error else "")
            lines += ["", f"_({note})_"]
        if message.citations:
            lines += ["", "### Sources", ""]
            for citation in message.citations:
                lines.append(f"{int(citation['index'])}. **{citation['document_title']}**")
                if citation.get("snippet"):
                    lines.append("   " + _quote(str(citation["snippet"])))
    return "\n".join(lines) + "\n"


def conversation_json(*, conversation: Conversation, messages: Sequence[Message]) -> dict:
    return {
        "format": JSON_FORMAT,
        "exported_at": timezone.now().isoformat(),
        "conversation": conversation_data(conversation),
        "assistant": _assistant_data(conversation),
        "messages": [message_data(message) for message in messages],
    }
