# ruff: noqa: RUF001 - Chinese test data uses full-width punctuation on purpose
"""Question files for retrieval evaluation, uploaded through the staff API: CSV and JSON Lines,
UTF-8 with or without BOM, Chinese; wrong rows reported by number; size, type and row limits;
and the measures the runs (and bench/knowledge.py) compute with."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from rest_framework.test import APIClient

from knowledge.evaluation import (
    contains_answer,
    first_relevant_rank,
    mean_reciprocal_rank,
    percentile,
    recall_at,
)
from knowledge.models import EvaluationSet
from knowledge.services import documents_upload, knowledge_base_create
from tests.knowledge.conftest import upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(staff_user):
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def base(staff_user):
    """Documents are only named by the files, so they need not be processed."""
    base = knowledge_base_create(owner=staff_user, name="Handbook")
    documents_upload(
        knowledge_base=base,
        user=staff_user,
        files=[
            upload("leave.md", b"# Leave\n\n25 days."),
            upload("犹豫期.txt", "犹豫期为十五天。".encode()),
            upload("Printer Guide.txt", b"Error E-4471: toner."),
        ],
    )
    return base


def _post(client, base, filename: str, data: bytes, **fields):
    return client.post(
        f"/api/v1/knowledge/bases/{base.id}/evaluations/sets/",
        {"file": upload(filename, data), **fields},
        format="multipart",
    )


def test_csv_with_bom_chinese_headers_and_quoted_lines(staff_client, base):
    leave = base.documents.get(title="leave.md")
    text = (
        "问题,文档,答案,notes\n"
        "犹豫期有几天？,犹豫期.txt,十五天,ignored\n"
        "\n"  # a blank line is skipped, and still counted in the row numbers
        f'"How many days\nof leave?",{leave.id},25 days,\n'
        "What does E-4471 mean?,printer guide,,\n"  # title without extension, any case
        "Which error means toner?,,E-4471,\n"
    )
    response = _post(staff_client, base, "faq.csv", b"\xef\xbb\xbf" + text.encode(), name="FAQ")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "FAQ" and body["file_type"] == "csv" and body["question_count"] == 4
    stored = EvaluationSet.objects.get(id=body["id"])
    assert stored.questions == [
        {"row": 2, "question": "犹豫期有几天？", "document": "犹豫期.txt", "answer": "十五天"},
        {"row": 4, "question": "How many days\nof leave?", "document": str(leave.id),
         "answer": "25 days"},
        {"row": 5, "question": "What does E-4471 mean?", "document": "printer guide",
         "answer": ""},
        {"row": 6, "question": "Which error means toner?", "document": "", "answer": "E-4471"},
    ]  # fmt: skip
    detail = staff_client.get(f"/api/v1/knowledge/bases/{base.id}/evaluations/sets/{body['id']}/")
    assert detail.json()["questions"][0]["question"] == "犹豫期有几天？"


def test_jsonl_with_chinese_and_numeric_ids(staff_client, base):
    leave = base.documents.get(title="leave.md")
    lines = [
        {"question": "犹豫期有几天？", "document": "犹豫期.txt"},
        {},  # placeholder for a blank line
        {"question": "Days of leave?", "document": leave.id, "answer": "25"},
        {"question": "E-4471?", "answer": "toner"},
    ]
    text = "\n".join("" if not line else json.dumps(line, ensure_ascii=False) for line in lines)
    response = _post(staff_client, base, "faq.jsonl", b"\xef\xbb\xbf" + text.encode())
    assert response.status_code == 201, response.json()
    stored = EvaluationSet.objects.get(id=response.json()["id"])
    assert stored.name == "faq.jsonl" and stored.file_type == "jsonl"
    assert [(q["row"], q["document"], q["answer"]) for q in stored.questions] == [
        (1, "犹豫期.txt", ""),
        (3, str(leave.id), "25"),
        (4, "", "toner"),
    ]


def test_wrong_rows_are_listed_by_number_and_nothing_is_stored(staff_client, base):
    other = knowledge_base_create(owner=base.owner, name="Other")
    [(foreign, _task)] = documents_upload(
        knowledge_base=other, user=base.owner, files=[upload("x.txt", b"x")]
    )
    documents_upload(knowledge_base=base, user=base.owner, files=[upload("leave.txt", b"other")])
    text = (
        "question,document,answer\n"
        "Fine?,leave.md,\n"  # 2: right
        ",leave.md,\n"  # 3: no question
        "No expectation?,,\n"  # 4: neither document nor answer
        "Unknown?,handbook.pdf,\n"  # 5: no such document
        f"Foreign?,{foreign.id},\n"  # 6: a document of another base
        "Ambiguous?,LEAVE,\n"  # 7: leave.md and leave.txt
        "Only spaces?,,   \n"  # 8: an answer of white space is no answer
        "Punctuation?,,?!\n"  # 9: nothing to look for
    )
    response = _post(staff_client, base, "bad.csv", text.encode())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"]["error_count"] == 7
    rows = {e["row"]: e["message"] for e in error["details"]["errors"]}
    assert sorted(rows) == [3, 4, 5, 6, 7, 8, 9]
    assert "empty" in rows[3] and "expected" in rows[4]
    assert "handbook.pdf" in rows[5] and str(foreign.id) in rows[6]
    assert "several documents" in rows[7]
    assert "rows 3, 4, 5, 6, 7, 8, 9" in error["message"]
    assert not EvaluationSet.objects.exists()

    jsonl = (
        b'{"question": "ok", "answer": "x"}\n{not json\n[1, 2]\n'
        b'{"question": ["a"], "answer": "x"}\n'
    )
    response = _post(staff_client, base, "bad.jsonl", jsonl)
    assert response.status_code == 400
    errors = response.json()["error"]["details"]["errors"]
    assert [e["row"] for e in errors] == [2, 3, 4]
    assert "JSON" in errors[0]["message"] and "object" in errors[1]["message"]


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("gbk.csv", "question,answer\n犹豫期,十五天\n".encode("gbk"), "UTF-8"),
        ("no-header.csv", b"what,where\nA?,b\n", "name the columns"),
        ("no-expectation.csv", b"question,notes\nA?,b\n", "document or an answer column"),
        ("empty.jsonl", b"\n\n", "no questions"),
        ("binary.csv", b"question,answer\n\x00\x01,2\n", "NUL"),
    ],
)
def test_unreadable_files_get_one_clear_reason(staff_client, base, name, data, needle):
    response = _post(staff_client, base, name, data)
    assert response.status_code == 400
    assert needle in response.json()["error"]["message"]


def test_size_type_and_row_limits(staff_client, base, settings):
    response = _post(staff_client, base, "questions.txt", b"question,answer\nA?,b\n")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_file_type"

    settings.KNOWLEDGE_EVAL_MAX_UPLOAD_BYTES = 64
    big = b"question,answer\n" + b"Is this long enough?,yes\n" * 3
    response = _post(staff_client, base, "big.csv", big)
    assert response.status_code == 413
    assert response.json()["error"]["details"]["max_bytes"] == 64

    settings.KNOWLEDGE_EVAL_MAX_UPLOAD_BYTES = 512 * 1024
    settings.KNOWLEDGE_EVAL_MAX_QUESTIONS = 3
    assert _post(staff_client, base, "three.csv", big).status_code == 201
    response = _post(staff_client, base, "four.csv", big + b"One more?,yes\n")
    assert response.status_code == 400
    assert "more than 3 questions" in response.json()["error"]["message"]


def test_answer_matching_is_normalised():
    chunk = "投保人有１５天的犹豫期。\nThe Printer shows  ERROR\nE-4471 when empty."
    assert contains_answer(chunk, "15天")  # full-width digits
    assert contains_answer(chunk, "error e-4471")  # case, a line break for a space
    assert contains_answer(chunk, "犹豫期")
    assert not contains_answer(chunk, "16天")
    assert not contains_answer(chunk, "")


def test_measures():
    ranks = [1, 3, None, 7, 2]
    assert recall_at(ranks, 1) == 0.2
    assert recall_at(ranks, 5) == 0.6
    assert recall_at(ranks, 10) == 0.8
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 3 + 1 / 7 + 1 / 2) / 5)
    assert recall_at([], 5) == 0.0 and mean_reciprocal_rank([]) == 0.0
    assert first_relevant_rank(["a", "b", "c"], lambda x: x in "bc") == 2
    assert first_relevant_rank(["a"], lambda x: x == "z") is None
    rng = random.Random(7)
    for size in (1, 2, 9, 100):
        values = [rng.random() for _ in range(size)]
        for q in (0, 50, 95, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
