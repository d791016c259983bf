"""Knowledge base benchmark: ingestion throughput, retrieval latency and index recall,
retrieval quality. Run: `.venv/bin/python bench/knowledge.py` (about 10 minutes on 2 cores).

Everything runs on real components in a throw-away folder: an embedded Redis, Milvus Lite's
server, a SQLite database, the local all-MiniLM-L6-v2 model and the project's own pipeline
(`documents_upload` → `document_vectorize`) and retrieval (`knowledge.retrieval.search`).

Document collection (public, not written by us): Debian's manual pages, section 1 — the
English pages (`manpages`, and the pages the installed packages ship) and the Simplified
Chinese translations (`apt-get install manpages-zh`). Each page's NAME line is the question
("ls - list directory contents" → "list directory contents"), the page's body without its
NAME line is the document, and the known answer is that page: a known-item search.

Options: --pages N (per language, default 300), --skip-latency, --skip-quality,
--precisions fp32,int8 (instead of the sections above: ingestion and quality with the local
model in each precision side by side, and bases searched with the other precision's queries).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import wait_until_idle  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="openspark-bench-knowledge-"))
os.environ.update(
    DJANGO_SETTINGS_MODULE="openspark.settings.test",
    OPENSPARK_VAR_DIR=str(WORK),
    KNOWLEDGE_COLLECTION_PREFIX="bench",
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
)
os.environ.pop("DATABASE_URL", None)

from openspark.embedded import start_milvus_lite  # noqa: E402

MILVUS = start_milvus_lite(WORK / "milvus" / "data")
os.environ["MILVUS_URI"] = MILVUS.url

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from bench.manpages import load_manpages  # noqa: E402

# --- helpers ---------------------------------------------------------------------------------


def ingest(base, user, pages, *, workers: int = 1) -> dict:
    """Upload and vectorize every page; `workers` documents at a time, in threads, as the
    Celery worker's thread pool runs them (the embedder's lanes are shared between them)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    from knowledge.models import Document
    from knowledge.services import document_vectorize, documents_upload

    def one(page) -> int:
        command, _question, body = page
        try:
            upload = SimpleUploadedFile(f"{command}.txt", body.encode())
            [(document, task_id)] = documents_upload(
                knowledge_base=base, user=user, files=[upload], enforce_quota=False
            )
            document_vectorize(document_id=document.id, task_id=task_id)
            return document.id
        finally:
            if workers > 1:
                connections.close_all()  # this thread's own connection

    started = time.perf_counter()
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            ids = list(pool.map(one, pages))
    else:
        ids = [one(page) for page in pages]
    elapsed = time.perf_counter() - started
    documents = list(Document.objects.filter(id__in=ids))
    assert all(d.status == "ready" for d in documents), [d.error for d in documents]
    stages = {k: sum(d.timings.get(k, 0.0) for d in documents) for k in documents[0].timings}
    chunks = sum(d.chunk_count for d in documents)
    return {"documents": len(documents), "chunks": chunks, "seconds": elapsed,
            "chunks_per_s": chunks / elapsed, "stages": stages, "workers": workers,
            "doc_ids": {d.title[:-4]: d.id for d in documents}}  # fmt: skip


def report_ingest(label: str, result: dict) -> None:
    total = result["seconds"]
    head = (
        f"  {label}, {result['workers']} document(s) at a time: {result['documents']} documents, "
        f"{result['chunks']} chunks in {total:.1f} s = {result['chunks_per_s']:.1f} chunks/s"
    )
    if result["workers"] > 1:
        # Stages of different documents overlap: shares of the summed stage time.
        busy = sum(result["stages"].values())
        stages = ", ".join(f"{k} {100 * v / busy:.0f}%" for k, v in result["stages"].items())
        print(f"{head}; share of stage time: {stages}")
        return
    stages = ", ".join(
        f"{k} {v:.1f} s ({100 * v / total:.0f}%)" for k, v in result["stages"].items()
    )
    other = total - sum(result["stages"].values())
    print(f"{head}; {stages}, upload + bookkeeping {other:.1f} s ({100 * other / total:.0f}%)")


def quality(
    base, pages, doc_ids: dict[str, int], modes=("vector", "keyword", "hybrid")
) -> dict[str, tuple[float, float]]:
    """(recall@5, MRR@5) per mode, measured as the staff evaluation runs measure
    (knowledge/evaluation.py)."""
    from knowledge import retrieval
    from knowledge.evaluation import first_relevant_rank, mean_reciprocal_rank, recall_at

    scores = {}
    for mode in modes:
        ranks = []
        for command, question, _body in pages:
            hits = retrieval.search(
                knowledge_bases=[base], query=question, top_k=5, mode=mode,
                score_threshold=-1.0, use_cache=False,
            )  # fmt: skip
            expected = doc_ids[command]
            ranks.append(first_relevant_rank(hits, lambda h, e=expected: h.chunk.document_id == e))
        scores[mode] = (recall_at(ranks, 5), mean_reciprocal_rank(ranks))
    return scores


def latency(pages_en, *, sizes=(10_000, 100_000), queries=100) -> None:
    """Synthetic collections of the given sizes, built from real chunk vectors plus noise
    (a perturbed copy stays near its source, as paraphrases do); real queries embedded every
    time. Milvus Lite HNSW vs exact numpy search over the same vectors."""
    from knowledge.models import Chunk
    from knowledge.retrieval import embed_query
    from knowledge.vectorstore import VectorRow, get_vector_store

    store = get_vector_store()
    model = "local/all-MiniLM-L6-v2"
    real_ids = list(Chunk.objects.values_list("id", flat=True)[:3000])
    from knowledge.embedders import local_embedder

    texts = list(Chunk.objects.filter(id__in=real_ids).values_list("text", flat=True))
    seeds = np.array(local_embedder().embed(texts), dtype=np.float32)
    rng = np.random.default_rng(7)
    questions = [q for _c, q, _b in pages_en][:queries]
    for size in sizes:
        collection = store.ensure_collection(model=f"bench-latency-{size}", dimension=384)
        picks = rng.integers(0, len(seeds), size)
        noise = rng.normal(0, 0.35 / np.sqrt(384), (size, 384)).astype(np.float32)
        vectors = seeds[picks] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        started = time.perf_counter()
        for start in range(0, size, 5000):
            rows = [
                VectorRow(start + i + 1, 1 + (start + i) % 10, 1, "x", vectors[start + i].tolist())
                for i in range(min(5000, size - start))
            ]
            store.upsert(collection=collection, rows=rows)
        load_s = time.perf_counter() - started
        # Measure the index, not the brute-force path Lite uses until its build finishes.
        started = time.perf_counter()
        while time.perf_counter() - started < 600:
            info = store.client.describe_index(collection, "vector")
            if int(info.get("indexed_rows", 0)) >= size and not int(
                info.get("pending_index_rows", 0)
            ):
                break
            time.sleep(1)
        index_s = time.perf_counter() - started
        kb_ids = list(range(1, 11))
        store.search_vector(collection=collection, vector=vectors[0].tolist(), kb_ids=kb_ids,
                            limit=10)  # fmt: skip
        label = f"{size:>7,} chunks"
        print(f"  {label} (inserted in {load_s:.0f} s, indexed {index_s:.0f} s later)")
        # Lite keeps compacting and re-indexing segments after the index reports complete:
        # measured once right away and once that background work has settled (steady state).
        _measure("right after the index build", store, collection, vectors, kb_ids, questions)
        settle_s = wait_until_idle(MILVUS.process.pid)
        _measure(f"settled ({settle_s:.0f} s later)", store, collection, vectors, kb_ids,
                 questions)  # fmt: skip
        store.client.drop_collection(collection)
        store._ready.discard(collection)
    _query_cache_clear()
    started = time.perf_counter()
    for question in questions:
        embed_query(model=model, query=question + " ")
    per_query = 1000 * (time.perf_counter() - started) / len(questions)
    print(f"  (query embedding alone: {per_query:.1f} ms per query, part of every figure above)")


def _measure(label, store, collection, vectors, kb_ids, questions) -> None:
    from knowledge.evaluation import percentile
    from knowledge.retrieval import embed_query

    model = "local/all-MiniLM-L6-v2"
    milvus_ms, search_ms, numpy_ms, recalls = [], [], [], []
    for question in questions:
        _query_cache_clear()
        started = time.perf_counter()
        qv = embed_query(model=model, query=question)
        embedded = time.perf_counter()
        found = store.search_vector(collection=collection, vector=qv, kb_ids=kb_ids, limit=10)
        milvus_ms.append(1000 * (time.perf_counter() - started))
        search_ms.append(1000 * (time.perf_counter() - embedded))

        _query_cache_clear()
        started = time.perf_counter()
        q = np.array(embed_query(model=model, query=question), dtype=np.float32)
        sims = vectors @ q
        top = np.argpartition(-sims, 10)[:10]
        exact = set((top[np.argsort(-sims[top])] + 1).tolist())
        numpy_ms.append(1000 * (time.perf_counter() - started))
        recalls.append(len(exact & {cid for cid, _ in found}) / 10)
    print(
        f"    {label}: Milvus Lite HNSW p50 {percentile(milvus_ms, 50):.1f} ms, "
        f"p95 {percentile(milvus_ms, 95):.1f} ms (search alone p50 "
        f"{percentile(search_ms, 50):.1f}, p95 {percentile(search_ms, 95):.1f}) | numpy exact "
        f"p50 {percentile(numpy_ms, 50):.1f} ms, p95 {percentile(numpy_ms, 95):.1f} ms | "
        f"recall@10 of HNSW vs exact {statistics.mean(recalls):.3f}"
    )


def _query_cache_clear() -> None:
    from knowledge import retrieval

    retrieval.embed_query.cache_clear()


def compare_precisions(
    user, precisions: list[str], en_pages, zh_pages, workers: int, *, with_quality: bool
) -> None:
    """Ingestion speed and retrieval quality per precision of the local model, in one process,
    then each base searched with queries of every other precision (a deployment that changes
    precision keeps the vectors it has)."""
    from django.test import override_settings

    from knowledge.embedders import local_embedder
    from knowledge.services import knowledge_base_create

    print(f"\n## Local model precision ({', '.join(precisions)}), load {_load()}")
    bases = {}
    for precision in precisions:
        with override_settings(KNOWLEDGE_LOCAL_EMBED_PRECISION=precision):
            local_embedder().embed(["warm up"])
            for label, pages in (("English", en_pages), ("Chinese", zh_pages)):
                base = knowledge_base_create(
                    owner=user, name=f"{precision}-{label}", enforce_quota=False
                )
                result = ingest(base, user, pages)
                report_ingest(f"{precision}, {label}", result)
                bases[precision, label] = (base, pages, result["doc_ids"])
                other = knowledge_base_create(
                    owner=user, name=f"{precision}-{label}-{workers}", enforce_quota=False
                )
                report_ingest(f"{precision}, {label}", ingest(other, user, pages, workers=workers))
                print(f"    (load {_load()})")
    for (precision, label), (base, pages, doc_ids) in bases.items() if with_quality else ():
        for queries in precisions:
            _query_cache_clear()
            with override_settings(KNOWLEDGE_LOCAL_EMBED_PRECISION=queries):
                scores = quality(base, pages, doc_ids, modes=("vector", "hybrid"))
            line = " | ".join(f"{m} recall@5 {r:.3f} MRR {mrr:.3f}" for m, (r, mrr) in
                              scores.items())  # fmt: skip
            print(f"  {label} base in {precision}, queries in {queries}: {line}")
    _query_cache_clear()


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4, help="documents at a time, 2nd run")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--precisions", help="e.g. fp32,int8: compare these precisions only")
    args = parser.parse_args()

    zh_folder = Path("/usr/share/man/zh_CN/man1")
    if not zh_folder.exists():
        sys.exit("Chinese manual pages missing: apt-get install manpages-zh")
    setup_test_environment()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from knowledge.embedders import local_embedder
    from knowledge.services import knowledge_base_create

    user = get_user_model().objects.create(username="bench")
    started = time.perf_counter()
    local_embedder().embed(["warm up"])
    print(
        f"Local model loaded in {time.perf_counter() - started:.1f} s (once per process), "
        f"precision {local_embedder().precision} (KNOWLEDGE_LOCAL_EMBED_PRECISION)"
    )
    zh_pages = load_manpages(zh_folder, args.pages)
    en_pages = load_manpages(Path("/usr/share/man/man1"), args.pages)
    print(f"Corpus: {len(en_pages)} English and {len(zh_pages)} Chinese manual pages (man1)")
    if args.precisions:
        compare_precisions(
            user, args.precisions.split(","), en_pages, zh_pages, args.workers,
            with_quality=not args.skip_quality,
        )  # fmt: skip
        return

    print("\n## Ingestion (documents_upload + document_vectorize, local MiniLM, Milvus Lite)")
    en_base = knowledge_base_create(owner=user, name="man-en", enforce_quota=False)
    en = ingest(en_base, user, en_pages)
    report_ingest("English", en)
    zh_base = knowledge_base_create(owner=user, name="man-zh", enforce_quota=False)
    zh = ingest(zh_base, user, zh_pages)
    report_ingest("Chinese", zh)
    for label, pages in (("English", en_pages), ("Chinese", zh_pages)):
        base = knowledge_base_create(
            owner=user, name=f"man-{label}-{args.workers}", enforce_quota=False
        )
        report_ingest(label, ingest(base, user, pages, workers=args.workers))

    if not args.skip_quality:
        print("\n## Retrieval quality (question = NAME line, answer = that page; top 5 chunks)")
        # Lite keeps BM25 statistics per segment and merges segments in the background after a
        # load: measured right after ingestion, and again once that work has settled.
        for moment in ("right after ingestion", "settled"):
            if moment == "settled":
                moment = f"settled ({wait_until_idle(MILVUS.process.pid):.0f} s later)"
            for label, base, pages, result in (("English", en_base, en_pages, en),
                                               ("Chinese", zh_base, zh_pages, zh)):  # fmt: skip
                scores = quality(base, pages, result["doc_ids"])
                line = " | ".join(f"{m} recall@5 {r:.3f} MRR {mrr:.3f}" for m, (r, mrr) in
                                  scores.items())  # fmt: skip
                print(f"  {label} ({len(pages)} questions), {moment}: {line}")
        # The peers of the chosen fusion: fixed keyword weights (no agreement scaling).
        from knowledge import retrieval

        chosen = retrieval.KEYWORD_WEIGHT, retrieval.AGREEMENT_FLOOR
        for weight in (1.0, 0.5, 0.3):
            # A floor of 1 makes the weight fixed (agreement is at most 1).
            retrieval.KEYWORD_WEIGHT, retrieval.AGREEMENT_FLOOR = weight, 1.0
            r, mrr = quality(en_base, en_pages, en["doc_ids"], modes=("hybrid",))["hybrid"]
            print(
                f"  English hybrid, fixed keyword weight {weight}: recall@5 {r:.3f} MRR {mrr:.3f}"
            )
        retrieval.KEYWORD_WEIGHT, retrieval.AGREEMENT_FLOOR = chosen

    if not args.skip_latency:
        print("\n## Retrieval latency (query embedding + vector search, 10 bases, top 10)")
        latency(en_pages)


if __name__ == "__main__":
    try:
        main()
    finally:
        MILVUS.stop()
        shutil.rmtree(WORK, ignore_errors=True)
