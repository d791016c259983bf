# Chinese punctuation in the title helpers is intended.
# ruff: noqa: RUF001
"""What the model is sent and what is kept from its answer: the history window, citations and
titles. Pure functions over rows already read, so they are easy to test and reason about."""

from __future__ import annotations

import re
from collections.abc import Sequence

from openspark.llm.base import ChatMessage, Passage, contains_cjk, estimate_tokens

from .models import Message

SNIPPET_CHARS = 300
TITLE_MAX_CHARS = 60
_CITATION = re.compile(r"\[(\d{1,3})\]")

TITLE_INSTRUCTIONS = (
    "Write a short title (at most six words) for the conversation below, in the language of "
    "the user's message. Answer with the title only: no quotes, no trailing punctuation."
)


def history_window(
    *, earlier: Sequence[Message], question: Message, token_budget: int, max_messages: int
) -> list[ChatMessage]:
    """The question preceded by as many earlier exchanges as fit the budget, oldest first.

    `earlier` holds the conversation's messages before the question in id order. Each earlier
    question is paired with its latest reply that has text (several exist after regenerate);
    exchanges are dropped whole, oldest first, so the model never sees an answer without
    its question.
    """
    latest_reply: dict[int, Message] = {}
    for message in earlier:
        # A reply stopped before its first token, or a failed one, says nothing worth sending.
        usable = (
            message.role == Message.Role.ASSISTANT
            and message.reply_to_id
            and message.status in (Message.Status.COMPLETED, Message.Status.STOPPED)
            and message.content
        )
        if usable:
            latest_reply[message.reply_to_id] = message
    exchanges: list[list[ChatMessage]] = []
    for message in earlier:
        if message.role != Message.Role.USER:
            continue
        exchange: list[ChatMessage] = [{"role": "user", "content": message.content}]
        if reply := latest_reply.get(message.id):
            exchange.append({"role": "assistant", "content": reply.content})
        exchanges.append(exchange)

    window: list[ChatMessage] = [{"role": "user", "content": question.content}]
    used = estimate_tokens(question.content)
    for exchange in reversed(exchanges):
        cost = sum(estimate_tokens(m["content"]) for m in exchange)
        if used + cost > token_budget or len(window) + len(exchange) > max_messages:
            break
        window[:0] = exchange
        used += cost
    return window


def prompt_messages(*, system_prompt: str, window: list[ChatMessage]) -> list[ChatMessage]:
    if not system_prompt:
        return window
    return [{"role": "system", "content": system_prompt}, *window]


def citations_for(*, text: str, passages: Sequence[Passage]) -> list[dict]:
    """The sources the answer cites with [n]; all passed sources when it cites none."""
    offered = {p.index for p in passages}
    cited = {int(n) for n in _CITATION.findall(text)} & offered
    chosen = [p for p in passages if p.index in cited] if cited else list(passages)
    return [
        {
            "index": p.index,
            "document_id": p.document_id,
            "document_title": p.document_title,
            "chunk_id": p.chunk_id,
            "snippet": " ".join(p.text.split())[:SNIPPET_CHARS],
            "score": round(float(p.score), 4),
        }
        for p in sorted(chosen, key=lambda p: p.index)
    ]


def title_from_question(question: str) -> str:
    """The offline title: the question's first words (first characters for CJK text)."""
    text = " ".join(question.split())
    if contains_cjk(text):
        short = text[:20]
    else:
        words = text.split(" ")
        short = " ".join(words[:8])
    if len(short) < len(text):
        short = short.rstrip(" ,.;:!?，。；：！？") + "…"
    return short[:TITLE_MAX_CHARS]


def title_clean(raw: str) -> str:
    """A model's title without the quotes, prefixes and trailing dots models like to add."""
    line = next((line for line in raw.strip().splitlines() if line.strip()), "")
    line = re.sub(r"^(title|标题)\s*[:：]\s*", "", line.strip(), flags=re.IGNORECASE)
    line = line.strip(" \"'“”‘’「」《》*#").rstrip("。.")
    return line[:TITLE_MAX_CHARS].strip()


TITLE_PROMPT_REPLY_CHARS = 1000


def title_prompt(*, question: str, answer: str) -> list[ChatMessage]:
    return [
        {"role": "system", "content": TITLE_INSTRUCTIONS},
        {
            "role": "user",
            "content": f"User: {question}\n\nAssistant: {answer[:TITLE_PROMPT_REPLY_CHARS]}",
        },
    ]
