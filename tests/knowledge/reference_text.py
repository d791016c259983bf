"""The text splitting of knowledge/ before it was made linear, kept as the specification the
linear code must match on every input (tests/knowledge/test_linear_text.py). Super-linear on
crafted input: only ever run on short strings."""

from __future__ import annotations

import re

SENTENCE_END = re.compile(r"[。！？；…]+[”’」』）)\"']*|[.!?;]+[\"')\]]*(?=\s|$)|\n+")  # noqa: RUF001
MD_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")


def split_sentences(text: str) -> list[str]:
    sentences = []
    start = 0
    for match in SENTENCE_END.finditer(text):
        sentences.append(text[start : match.end()])
        start = match.end()
    sentences.append(text[start:])
    cleaned = (_SPACES.sub(" ", s).strip() for s in sentences)
    return [s for s in cleaned if s]


def markdown_heading(line: str) -> str | None:
    match = MD_HEADING.match(line)
    return match.group(1) if match else None


def _joined_length(parts: list[str]) -> int:
    return sum(len(p) for p in parts) + max(0, len(parts) - 1)


def _join(parts: list[str]) -> str:
    out = parts[0]
    for part in parts[1:]:
        glue = "" if (out[-1:] and ord(out[-1]) > 0x2E80) or ord(part[0]) > 0x2E80 else " "
        out += glue + part
    return out


def _overlap_tail(previous: list[str], overlap: int, *, room: int) -> list[str]:
    limit = min(overlap, room)
    if limit <= 0:
        return []
    tail: list[str] = []
    for sentence in reversed(previous):
        if _joined_length([sentence, *tail]) > limit:
            break
        tail.insert(0, sentence)
    if not tail and previous:
        return [previous[-1][-limit:]]
    return tail


def split_text(text: str, *, chunk_size: int, chunk_overlap: int) -> list[str]:
    overlap = max(0, min(chunk_overlap, chunk_size // 2))
    sentences: list[str] = []
    for sentence in split_sentences(text):
        if len(sentence) > chunk_size:
            sentences.extend(
                sentence[i : i + chunk_size] for i in range(0, len(sentence), chunk_size)
            )
        else:
            sentences.append(sentence)
    chunks: list[str] = []
    current: list[str] = []
    for sentence in sentences:
        if current and _joined_length([*current, sentence]) > chunk_size:
            chunks.append(_join(current))
            current = _overlap_tail(current, overlap, room=chunk_size - len(sentence) - 1)
        current.append(sentence)
    if current:
        chunks.append(_join(current))
    return chunks
