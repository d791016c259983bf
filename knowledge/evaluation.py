"""Retrieval evaluation, the parts that need no database: reading a question file and the
measures (recall@k, MRR, latency percentiles). The staff evaluation runs
(`knowledge.services.evaluation_run_execute`) and `bench/knowledge.py` both measure with these.

A question file is CSV (a header row naming the columns) or JSON Lines (one object a line),
UTF-8 with or without a byte-order mark. Each question has an expected document (its id in
the base, or its title / file name) and/or an expected answer string; see docs/knowledge.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from django.utils.translation import gettext as _

MODES = ("hybrid", "vector", "keyword")
# Every mode is searched this deep, so recall@1/@5/@10 and MRR come from one search.
DEPTH = 10
CUTOFFS = (1, 5, 10)
MAX_QUESTION_CHARS = 2000
MAX_ANSWER_CHARS = 1000
MAX_DOCUMENT_CHARS = 255

# CSV header names (case and surrounding spaces ignored) → field; JSON keys are the fields.
CSV_COLUMNS = {
    "question": "question", "query": "question", "问题": "question",
    "document": "document", "expected_document": "document", "文档": "document",
    "answer": "answer", "expected_answer": "answer", "答案": "answer",
}  # fmt: skip
FILE_TYPES = ("csv", "jsonl")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Question:
    row: int  # CSV: record number, the header being row 1; JSONL: line number
    question: str
    document: str  # as written: an id or a title; "" when not given
    answer: str  # as written; "" when not given

    def as_dict(self) -> dict:
        return {"row": self.row, "question": self.question, "document": self.document,
                "answer": self.answer}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    message: str

    def as_dict(self) -> dict:
        return {"row": self.row, "message": self.message}


class QuestionFileError(Exception):
    """The file as a whole cannot be read (encoding, header, no questions, too many)."""


def file_type_of(name: str) -> str:
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return "jsonl" if extension == "ndjson" else extension


def parse_question_file(
    *, name: str, data: bytes, max_questions: int
) -> tuple[list[Question], list[RowError]]:
    """The questions of a file and the rows that are wrong (each with its number). The file
    type comes from the name's extension (`file_type_of` must be in FILE_TYPES)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QuestionFileError(
            _("The file is not UTF-8 text (invalid byte at position %(at)d); save it as UTF-8.")
            % {"at": exc.start}
        ) from None
    if "\x00" in text:
        raise QuestionFileError(_("The file contains NUL characters; it is not a text file."))
    rows = _csv_rows(text) if file_type_of(name) == "csv" else _jsonl_rows(text)
    questions: list[Question] = []
    errors: list[RowError] = []
    for row, fields, problem in rows:
        if len(questions) + len(errors) >= max_questions:
            raise QuestionFileError(
                _("The file has more than %(n)d questions; split it into smaller sets.")
                % {"n": max_questions}
            )
        if problem:
            errors.append(RowError(row, problem))
            continue
        question, message = _question(row, fields)
        if message:
            errors.append(RowError(row, message))
        else:
            questions.append(question)
    if not questions and not errors:
        raise QuestionFileError(_("The file holds no questions."))
    return questions, errors


def _csv_rows(text: str) -> Iterable[tuple[int, dict, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise QuestionFileError(_("Row 1: %(error)s") % {"error": exc}) from None
    if header is None:
        raise QuestionFileError(_("The file holds no questions."))
    columns = [CSV_COLUMNS.get(name.strip().lower()) for name in header]
    if "question" not in columns:
        raise QuestionFileError(
            _("The first row must name the columns: question, and document and/or answer.")
        )
    if "document" not in columns and "answer" not in columns:
        raise QuestionFileError(
            _("Add a document or an answer column: each question needs an expected result.")
        )
    row = 1
    while True:
        row += 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield row, {}, str(exc)
            return  # the reader cannot resynchronise after a broken quote
        if not any(value.strip() for value in values):
            continue  # blank line
        fields = {}
        for column, value in zip(columns, values, strict=False):
            if column:
                fields[column] = value
        yield row, fields, ""


def _jsonl_rows(text: str) -> Iterable[tuple[int, dict, str]]:
    for row, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            yield row, {}, _("not valid JSON (%(error)s)") % {"error": exc}
            continue
        if not isinstance(value, dict):
            yield row, {}, _("each line must be a JSON object")
            continue
        yield row, value, ""


def _question(row: int, fields: dict) -> tuple[Question | None, str]:
    def text(key: str) -> str | None:
        value = fields.get(key)
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None
        return str(value).strip()

    question, document, answer = text("question"), text("document"), text("answer")
    if question is None or document is None or answer is None:
        return None, _("question, document and answer must be text (a document may be an id)")
    if not question:
        return None, _("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        return None, _("the question is longer than %(n)d characters") % {"n": MAX_QUESTION_CHARS}
    if not document and not answer:
        return None, _("give an expected document, an expected answer, or both")
    if len(document) > MAX_DOCUMENT_CHARS:
        return None, _("the document is longer than %(n)d characters") % {"n": MAX_DOCUMENT_CHARS}
    if len(answer) > MAX_ANSWER_CHARS:
        return None, _("the answer is longer than %(n)d characters") % {"n": MAX_ANSWER_CHARS}
    if answer and not any(character.isalnum() for character in answer):
        return None, _("the answer has no letters or digits to look for")
    return Question(row, question, document, answer), ""


# --- matching --------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """For answer matching: Unicode compatibility forms folded (full-width digits and
    letters, ligatures), case folded, runs of white space made one space, ends trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def contains_answer(text: str, answer: str) -> bool:
    """Whether `text` contains `answer`, both normalised; white space is ignored where the
    two differ only by it (a line break in the chunk, a space in the answer)."""
    haystack, needle = normalise(text), normalise(answer)
    return bool(needle) and (
        needle in haystack or needle.replace(" ", "") in haystack.replace(" ", "")
    )


# --- measures --------------------------------------------------------------------------------


def first_relevant_rank(retrieved: Sequence[T], is_relevant: Callable[[T], bool]) -> int | None:
    """1-based rank of the first relevant item, None when none is."""
    for rank, item in enumerate(retrieved, start=1):
        if is_relevant(item):
            return rank
    return None


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of questions with a relevant passage in the first k (0.0 for no questions)."""
    if not ranks:
        return 0.0
    return sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    """Mean of 1/rank of the first relevant passage (0 where none was found in the depth
    searched: MRR@DEPTH)."""
    if not ranks:
        return 0.0
    return sum(1 / rank for rank in ranks if rank) / len(ranks)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(ranks: Sequence[int | None], latencies_ms: Sequence[float]) -> dict[str, float]:
    """One mode's figures, rounded for storage and display."""
    return {
        **{f"recall_at_{k}": round(recall_at(ranks, k), 4) for k in CUTOFFS},
        "mrr": round(mean_reciprocal_rank(ranks), 4),
        "latency_p50_ms": round(percentile(latencies_ms, 50), 2),
        "latency_p95_ms": round(percentile(latencies_ms, 95), 2),
    }
