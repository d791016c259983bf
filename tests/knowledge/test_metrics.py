"""Ingestion metrics of a real document (parse, split, local embedding model, Milvus Lite)."""

import pytest
from django.test import Client

from knowledge.services import knowledge_base_create
from tests.knowledge.conftest import ingest
from tests.prom import scrape

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("embedder")]


def test_a_ready_document_counts_its_chunks_and_stage_seconds(user):
    base = knowledge_base_create(owner=user, name="metrics")
    before = scrape(Client())

    text = "\n\n".join(
        f"Paragraph {n}: " + "tides rise and fall twice a day. " * 12 for n in range(8)
    )
    document = ingest(base, user, "tides.txt", text.encode())

    after = scrape(Client())
    assert document.status == "ready" and document.chunk_count > 1

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("openspark_ingest_documents_total") == 1
    assert delta("openspark_ingest_chunks_total") == document.chunk_count
    for stage in ("parse", "split", "embed", "store"):
        assert delta("openspark_ingest_seconds_total", stage=stage) > 0, stage
    assert delta("openspark_ingest_seconds_total") == pytest.approx(
        sum(document.timings.values()), abs=0.01
    )
