"""Text that users upload or type is split and matched in linear time, and the linear code
gives exactly what the old patterns gave (tests/knowledge/reference_text.py keeps them).

A pattern with catastrophic backtracking holds the GIL for its whole run, so a timing test
cannot interrupt it from a thread: each timed call runs in a forked child that is killed at a
deadline, and the child reports the CPU time the call took."""

from __future__ import annotations

import multiprocessing
import random
import re
import sys
import time
from collections.abc import Callable

import pytest

from conversations.prompts import title_clean
from knowledge.chunking import split_sentences, split_text
from knowledge.parsing import markdown_heading, parse_document
from openspark.llm.base import estimate_tokens
from openspark.llm.offline import excerpt, split_pieces
from openspark.llm.testserver import reply_text, tokenize
from tests.knowledge import reference_text as old

N = 200_000
BUDGET = 0.5  # seconds for 200,000 characters; linear code takes a few milliseconds
DEADLINE = 10.0  # the old patterns take minutes to weeks on these inputs


def _timed(call: Callable[[], object], conn) -> None:
    started = time.process_time()
    call()
    conn.send(time.process_time() - started)


def run_bounded(call: Callable[[], object]) -> float:
    """CPU seconds `call()` took in a forked child (CPU, not wall time: other processes on a
    busy machine do not count); fails if it is still running DEADLINE seconds later."""
    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_timed, args=(call, sender))
    child.start()
    try:
        if not receiver.poll(DEADLINE):
            pytest.fail(f"still running after {DEADLINE:.0f} s")
        return receiver.recv()
    finally:
        child.kill()
        child.join()


ADVERSARIAL = {
    "dots then a letter": lambda: split_sentences("." * N + "a"),
    "mixed ASCII marks then a letter": lambda: split_sentences("!?;." * (N // 4) + "a"),
    "marks, closing quotes, a letter": lambda: split_sentences(
        "." * (N // 2) + ")" * (N // 2) + "a"
    ),
    "a line of one-letter sentences": lambda: split_text(
        "a\n" * (N // 2), chunk_size=4000, chunk_overlap=2000
    ),
    "one line without a sentence end": lambda: split_text(
        "word " * (N // 5), chunk_size=500, chunk_overlap=50
    ),
    "heading padded with spaces": lambda: markdown_heading("# a" + " " * N + "b"),
    "heading of spaces": lambda: markdown_heading("#" + " " * N),
    "heading with closing hashes": lambda: markdown_heading("# a" + " #" * (N // 2) + "b"),
    "a run of hashes": lambda: markdown_heading("#" * N),
    "Markdown file with a padded heading": lambda: parse_document(
        data=("# a" + " " * N + "b\nbody").encode(), file_type="md"
    ),
    "HTML with a long run of blanks": lambda: parse_document(
        data=("<p>a" + " \t\u00a0" * (N // 3) + "b</p>").encode(), file_type="html"
    ),
    "offline excerpt": lambda: excerpt("." + " " * N + "x"),
    "offline pieces": lambda: split_pieces("a " * (N // 2) + "中" * 1000),
    "title prefix": lambda: title_clean("title" + " " * N + "x"),
    "token estimate": lambda: estimate_tokens("中a" * (N // 2)),
    "test server directive": lambda: reply_text(
        [{"role": "user", "content": "[[tokens:" + "1" * N}]
    ),
    "test server tokens": lambda: tokenize(" a" * (N // 2)),
}


@pytest.mark.parametrize("call", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_user_text_is_processed_in_linear_time(call):
    assert run_bounded(call) < BUDGET


# Sentence marks and closing quotes, ASCII and CJK, with words and blanks between them.
MARKS = ".!?;。！？；…”’」)）'\"]"  # noqa: RUF001
ALPHABET = [
    *MARKS,
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n",
    "\u3000",
    "\u00a0",
    "3",
    "e.g",
    "word",
    "中文",
    "#",
]


def _random_texts(seed: int, count: int, max_pieces: int) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_pieces)))
        for _ in range(count)
    ]


def test_sentence_ends_are_where_the_old_pattern_put_them():
    from knowledge.chunking import _SENTENCE_END

    for text in _random_texts(1, 5000, 30):
        new = [m.span() for m in _SENTENCE_END.finditer(text)]
        assert new == [m.span() for m in old.SENTENCE_END.finditer(text)], repr(text)
        assert split_sentences(text) == old.split_sentences(text), repr(text)


def test_chunks_are_what_the_old_packing_made():
    rng = random.Random(2)
    for text in _random_texts(3, 1500, 120):
        size = rng.choice([20, 25, 40, 100])
        overlap = rng.choice([0, 5, 10, 20, 60])
        assert split_text(text, chunk_size=size, chunk_overlap=overlap) == old.split_text(
            text, chunk_size=size, chunk_overlap=overlap
        ), (text, size, overlap)


HEADING_PIECES = ["#", "#", "##", " ", "  ", "\t", "\x1f", "\u3000", "\u00a0", "a", "中", "b c"]


def test_markdown_headings_are_what_the_old_pattern_found():
    rng = random.Random(4)
    lines = ["# Title", "## Title ##", "#Title", "####### seven", "#", "# ", "#  ", "# #",
             "# ###", "#\t中文 #  ", "#  a  #  b  ##  ", "", "plain", " # indented"]  # fmt: skip
    lines += [
        "".join(rng.choice(HEADING_PIECES) for _ in range(rng.randint(0, 12))) for _ in range(20000)
    ]
    for line in lines:
        assert markdown_heading(line) == old.markdown_heading(line), repr(line)


def test_str_isspace_is_the_whitespace_of_str_patterns():
    """markdown_heading relies on it (strip() for the pattern's \\s)."""
    whitespace = re.compile(r"\s")
    mismatched = [
        hex(c)
        for c in range(sys.maxunicode + 1)
        if chr(c).isspace() != bool(whitespace.match(chr(c)))
    ]
    assert mismatched == []
