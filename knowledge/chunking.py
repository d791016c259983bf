"""Chinese-aware splitting: sentences first (the full-width full stop, exclamation and question
marks and semicolon, their ASCII cousins, and newlines),
then sentences packed into chunks of at most `chunk_size` characters, each chunk starting with
up to `chunk_overlap` characters of whole sentences from the end of the previous one.

Sizes are in characters: a Chinese character is about one token and an English word about
five characters, so 500 characters stay under the local model's 256-token window in both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from openspark.llm.base import estimate_tokens

from .parsing import Section

# A sentence ends after CJK terminal punctuation (with any closing quotes), after ASCII . ! ? ;
# followed by whitespace (so 3.14 and e.g. stay whole), or at a line break.
# Linear time on any text: the lookbehind lets only the first mark of a run of ASCII marks start
# a match, and possessive quantifiers never give back what they took. Without them, a run of n
# dots followed by a letter cost n²/2 steps (40,000 dots: 46 s holding the GIL); every later
# start in a run reaches the same end and fails the same way, so skipping them changes nothing.
_SENTENCE_END = re.compile(
    r"[。！？；…]++[”’」』）)\"']*+|(?<![.!?;])[.!?;]++[\"')\]]*+(?=\s|$)|\n++"  # noqa: RUF001
)
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    text: str
    token_count: int
    page: int | None
    section: str


def split_sentences(text: str) -> list[str]:
    sentences = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        sentences.append(text[start : match.end()])
        start = match.end()
    sentences.append(text[start:])
    cleaned = (_SPACES.sub(" ", s).strip() for s in sentences)
    return [s for s in cleaned if s]


def _hard_split(sentence: str, size: int) -> list[str]:
    return [sentence[i : i + size] for i in range(0, len(sentence), size)]


def _joined_length(parts: list[str]) -> int:
    return sum(len(p) for p in parts) + max(0, len(parts) - 1)


def _join(parts: list[str]) -> str:
    # No space between CJK sentences, one between Latin ones.
    pieces = [parts[0]]
    for previous, part in pairwise(parts):
        pieces.append("" if ord(previous[-1]) > 0x2E80 or ord(part[0]) > 0x2E80 else " ")
        pieces.append(part)
    return "".join(pieces)


def split_text(text: str, *, chunk_size: int, chunk_overlap: int) -> list[str]:
    if chunk_size < 20:
        raise ValueError("chunk_size must be at least 20 characters")
    overlap = max(0, min(chunk_overlap, chunk_size // 2))
    sentences: list[str] = []
    for sentence in split_sentences(text):
        too_long = len(sentence) > chunk_size
        sentences.extend(_hard_split(sentence, chunk_size) if too_long else [sentence])

    # `length` is _joined_length(current), kept up to date rather than recounted per sentence:
    # recounting made a text of one-letter lines cost chunk_size/2 steps per letter.
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    for sentence in sentences:
        if current and length + 1 + len(sentence) > chunk_size:
            chunks.append(_join(current))
            current = _overlap_tail(current, overlap, room=chunk_size - len(sentence) - 1)
            length = _joined_length(current)
        length += len(sentence) + (1 if current else 0)
        current.append(sentence)
    if current:
        chunks.append(_join(current))
    return chunks


def _overlap_tail(previous: list[str], overlap: int, *, room: int) -> list[str]:
    """Whole sentences from the end of the previous chunk, at most `overlap` characters and
    never so many that the next sentence would not fit; a single long last sentence
    contributes its last `overlap` characters instead."""
    limit = min(overlap, room)
    if limit <= 0:
        return []
    taken, joined = 0, -1  # joined: _joined_length of the last `taken` sentences
    for sentence in reversed(previous):
        joined += len(sentence) + 1
        if joined > limit:
            break
        taken += 1
    if not taken and previous:
        return [previous[-1][-limit:]]
    return previous[len(previous) - taken :]


def chunk_sections(
    sections: list[Section], *, chunk_size: int, chunk_overlap: int
) -> list[ChunkDraft]:
    """Chunks never span two pages or two headings, so each keeps one page/section label."""
    drafts = []
    for section in sections:
        for text in split_text(section.text, chunk_size=chunk_size, chunk_overlap=chunk_overlap):
            drafts.append(
                ChunkDraft(
                    text=text,
                    token_count=estimate_tokens(text),
                    page=section.page,
                    section=section.section,
                )
            )
    return drafts
