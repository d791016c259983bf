# Chinese punctuation in the zh texts is intended.
# ruff: noqa: RUF001
"""The provider used when no model is configured: no generation, only quotes with citations.

It streams like a real model (small pieces, then a Finish with estimated usage) so the whole
reply pipeline works on a laptop with no API key. It must never pretend to be a real model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Sequence

from .base import (
    ChatEvent,
    ChatMessage,
    ChatProvider,
    Delta,
    Finish,
    Passage,
    Usage,
    contains_cjk,
    estimate_prompt_tokens,
    estimate_tokens,
)

MAX_QUOTED_PASSAGES = 3
MAX_SENTENCES = 3
MAX_QUOTE_CHARS = 300

_TEXTS = {
    "en": {
        "header": (
            "Offline mode — no language model is configured. "
            "Relevant passages from your knowledge bases:"
        ),
        "quote": '- {title}: "{excerpt}" [{index}]',
        "unconfigured": (
            "Offline mode — no language model is configured, so I can't write an answer. "
            "An administrator can enable AI replies by setting ZHIPUAI_API_KEY (Zhipu AI), or "
            "OPENAI_COMPAT_BASE_URL and OPENAI_COMPAT_MODEL for an OpenAI-compatible server "
            "such as vLLM, Ollama or Xinference. Until then, ask in a conversation that uses a "
            "knowledge base and I will quote the most relevant passages."
        ),
    },
    "zh": {
        "header": "离线模式：尚未配置语言模型。以下是知识库中的相关段落：",
        "quote": "- {title}：“{excerpt}” [{index}]",
        "unconfigured": (
            "离线模式：尚未配置语言模型，因此无法生成回答。"
            "管理员可以设置 ZHIPUAI_API_KEY（智谱 AI），"
            "或设置 OPENAI_COMPAT_BASE_URL 和 OPENAI_COMPAT_MODEL 以使用 vLLM、Ollama、"
            "Xinference 等 OpenAI 兼容服务，从而启用 AI 回复。"
            "在此之前，请在使用知识库的对话中提问，我会引用最相关的段落。"
        ),
    },
}

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")
_CJK_CLASS = r"\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
# Two CJK characters or one word (with its trailing space) per piece; joined, they are the text.
_PIECE = re.compile(rf"[{_CJK_CLASS}]{{1,2}}\s*|[^\s{_CJK_CLASS}]+\s*|\s+")


def split_pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


def excerpt(text: str) -> str:
    """The first few sentences, whitespace collapsed, at most MAX_QUOTE_CHARS (+ an ellipsis)."""
    sentences = [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]
    joiner = "" if contains_cjk(text) else " "
    short = joiner.join(sentences[:MAX_SENTENCES])
    if len(short) > MAX_QUOTE_CHARS:
        return short[:MAX_QUOTE_CHARS].rstrip() + "…"
    if len(sentences) > MAX_SENTENCES:
        return short + joiner + "…"
    return short


def offline_reply(messages: Sequence[ChatMessage], passages: Sequence[Passage]) -> str:
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    texts = _TEXTS["zh" if contains_cjk(last_user) else "en"]
    if not passages:
        return texts["unconfigured"]
    best = sorted(passages, key=lambda p: p.score, reverse=True)[:MAX_QUOTED_PASSAGES]
    quotes = [
        texts["quote"].format(title=p.document_title, excerpt=excerpt(p.text), index=p.index)
        for p in best
    ]
    return "\n\n".join([texts["header"], *quotes])


class OfflineChatProvider(ChatProvider):
    name = "offline"
    model = "offline"
    is_offline = True

    def __init__(self, *, piece_delay: float = 0.0) -> None:
        # A small delay makes the streaming visible in the UI during local development.
        self.piece_delay = piece_delay

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        passages: Sequence[Passage] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Generator[ChatEvent, None, None]:
        reply = offline_reply(messages, passages)
        for piece in split_pieces(reply):
            if self.piece_delay:
                time.sleep(self.piece_delay)
            yield Delta(piece)
        yield Finish(
            finish_reason="stop",
            usage=Usage(
                prompt_tokens=estimate_prompt_tokens(messages, passages),
                completion_tokens=estimate_tokens(reply),
            ),
        )
