"""Ingestion as Prometheus counters: documents made ready, their chunks, and the seconds each
stage took (parse, split, embed, store). Chunks per second of ingestion work is
rate(openspark_ingest_chunks_total) / rate(openspark_ingest_seconds_total) summed over stages."""

from __future__ import annotations

from prometheus_client import Counter

INGEST_DOCUMENTS = Counter(
    "openspark_ingest_documents_total", "Documents vectorised to ready.", ["model"]
)
INGEST_CHUNKS = Counter(
    "openspark_ingest_chunks_total", "Chunks embedded and stored, by embedding model.", ["model"]
)
INGEST_SECONDS = Counter(
    "openspark_ingest_seconds_total", "Seconds of ingestion work, by stage.", ["stage"]
)


def document_ingested(*, model: str, chunks: int, timings: dict[str, float]) -> None:
    INGEST_DOCUMENTS.labels(model).inc()
    INGEST_CHUNKS.labels(model).inc(chunks)
    for stage, seconds in timings.items():
        INGEST_SECONDS.labels(stage).inc(seconds)
