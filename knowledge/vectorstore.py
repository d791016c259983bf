"""Vectors in Milvus through pymilvus `MilvusClient`: the same code serves Milvus Lite's gRPC
server (the embedded default) and a Milvus server.

One collection per embedding model and dimension; `kb_id` is its partition key, so a search
filtered to a few bases touches only their partitions. Rows are keyed by Chunk id and carry
nothing the database does not have: Milvus is an index, rebuilt from Chunk rows at will.
Servers that have BM25 full-text search (Milvus ≥ 2.5 and Milvus Lite 3) also get the chunk
text analysed with jieba and a BM25 sparse field, so keyword search runs where the vectors are.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from openspark.core.state import on_reset

logger = logging.getLogger(__name__)

TEXT_MAX_LENGTH = 65535  # VARCHAR limit, in bytes
HNSW_PARAMS = {"M": 16, "efConstruction": 200}
NUM_PARTITIONS = 64
LITE_SEAL_ROWS = 2000
# How long a process waits for another to finish creating a collection before finishing it.
CREATOR_WAIT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class VectorRow:
    chunk_id: int
    kb_id: int
    document_id: int
    text: str
    vector: list[float]


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


class VectorStore:
    def __init__(self, *, uri: str, token: str = "", prefix: str = "openspark_chunks") -> None:
        from pymilvus import MilvusClient

        self.uri = uri
        self.prefix = prefix
        self.client = MilvusClient(
            uri=uri, token=token, timeout=30, grpc_options=settings.MILVUS_GRPC_OPTIONS
        )
        version = self.client.get_server_version()
        # Lite reports "milvus_lite-3.x"; servers "v2.x.y". BM25 arrived in server 2.5.
        lite = "lite" in version and not version.startswith("v")
        self.is_lite = lite
        self.supports_bm25 = lite or _version_tuple(version) >= (2, 5)
        # Milvus 2.3 routes an upserted row to the partition of its primary key's hash, not
        # its partition key's, so searches filtered by kb_id never find it; delete + insert
        # routes correctly (found by tests/knowledge against the `milvus` 2.3.5 server).
        self.upsert_is_reliable = lite or _version_tuple(version) >= (2, 4)
        self.server_version = version
        self._ready: set[str] = set()
        self._unsealed: dict[str, int] = {}
        self._seal_timers: dict[str, threading.Timer] = {}
        self._seal_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._lock = threading.Lock()

    # --- collections ------------------------------------------------------------------------

    def collection_name(self, *, model: str, dimension: int) -> str:
        slug = re.sub(r"[^0-9a-zA-Z]+", "_", model).strip("_").lower()
        return f"{self.prefix}_{slug}_{dimension}"

    def our_collections(self) -> list[str]:
        return [c for c in self.client.list_collections() if c.startswith(f"{self.prefix}_")]

    def ensure_collection(
        self, *, model: str, dimension: int, creator_wait: float = CREATOR_WAIT_SECONDS
    ) -> str:
        name = self.collection_name(model=model, dimension=dimension)
        if name in self._ready:
            return name
        with self._lock:
            if name not in self._ready:
                if not self.client.has_collection(name):
                    self._create(name, dimension)
                elif not self._indexed(name, wait=creator_wait):
                    # Its creator died between creating it and indexing it (kill -9): finish.
                    self.client.create_index(name, self._index_params())
                self.client.load_collection(name)
                self._ready.add(name)
        return name

    def _indexed(self, name: str, *, wait: float = 0.0) -> bool:
        """Whether the collection has its index. Creating one takes several calls (create,
        index, load), so another process (web server, worker) can find it unindexed for a
        moment, when loading it fails ("index not found"); `wait` gives its creator time."""
        deadline = time.monotonic() + wait
        while not self.client.list_indexes(name):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def _index_params(self):
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="HNSW", metric_type="COSINE", params=HNSW_PARAMS)
        if self.supports_bm25:
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        return index

    def _create(self, name: str, dimension: int) -> None:
        self.client.create_collection(
            name,
            schema=self.collection_schema(dimension),
            index_params=self._index_params(),
            num_partitions=NUM_PARTITIONS,
            # Reads see every write that returned before them: a search right after a
            # document turns `ready`, or right after a delete, sees that change.
            consistency_level="Strong",
        )

    def collection_schema(self, dimension: int):
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.INT64, is_primary=True)
        schema.add_field("kb_id", DataType.INT64, is_partition_key=True)
        schema.add_field("document_id", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        if self.supports_bm25:
            schema.add_field(
                "text",
                DataType.VARCHAR,
                max_length=TEXT_MAX_LENGTH,
                enable_analyzer=True,
                # jieba cuts Chinese into words and passes Latin words through; lowercase so
                # "Milvus" matches "milvus".
                analyzer_params={"tokenizer": "jieba", "filter": ["lowercase"]},
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["text"],
                    output_field_names=["sparse"],
                )
            )
        return schema

    # --- writes -----------------------------------------------------------------------------

    def upsert(self, *, collection: str, rows: list[VectorRow]) -> None:
        """Write rows, replacing rows with the same chunk ids. On Milvus Lite they are sealed
        (`seal`) at the latest once this process has written nothing to the collection for
        KNOWLEDGE_VECTOR_SEAL_DELAY seconds, and at once past LITE_SEAL_ROWS waiting rows."""
        if not rows:
            return
        data = []
        for row in rows:
            item = {
                "chunk_id": row.chunk_id,
                "kb_id": row.kb_id,
                "document_id": row.document_id,
                "vector": row.vector,
            }
            if self.supports_bm25:
                item["text"] = _truncate_utf8(row.text, TEXT_MAX_LENGTH)
            data.append(item)
        # Replace, never add: Milvus keeps duplicate primary keys on a plain insert, and a
        # retried batch must not leave a second copy.
        if self.upsert_is_reliable:
            self.client.upsert(collection, data)
        else:
            self.client.delete(collection, ids=[row.chunk_id for row in rows])
            self.client.insert(collection, data)
        if self.is_lite:
            self._seal_later(collection, rows=len(rows))

    def seal(self, collection: str) -> None:
        """Make what was written searchable through indexes (Milvus Lite only).

        Lite keeps new rows in a memtable that every search scans in Python: at 1,000 rows a
        BM25 search rebuilds its index from them each time (~120 ms on two cores) and a vector
        search converts every vector (~50 ms). A flush writes them out as a segment whose
        vector index and BM25 index are built once (the vector index in Lite's background
        thread, which also merges small segments). Servers seal and index growing segments
        themselves and rate-limit flush calls, so there this does nothing."""
        if not self.is_lite:
            return
        with self._seal_lock:
            timer = self._seal_timers.pop(collection, None)
            if timer is not None:
                timer.cancel()
            self._unsealed[collection] = 0
        self.client.flush(collection)

    def _seal_later(self, collection: str, *, rows: int) -> None:
        # One segment per burst of writes, not per document: Lite's BM25 statistics are per
        # segment, and a segment of one document ranks that document's keywords below those
        # in large segments (English keyword recall@5 0.896 -> 0.875 when every document was
        # flushed on its own; docs/performance.md). So rows wait in the memtable, ranked as
        # one, until the ingest queue runs dry (services.vectors_seal_when_idle) or, for
        # writers outside it, until this process has been quiet for the delay.
        delay = settings.KNOWLEDGE_VECTOR_SEAL_DELAY
        with self._seal_lock:
            waiting = self._unsealed.get(collection, 0) + rows
            self._unsealed[collection] = waiting
            timer = self._seal_timers.pop(collection, None)
            if timer is not None:
                timer.cancel()
            if waiting < LITE_SEAL_ROWS and delay > 0:
                timer = threading.Timer(delay, self._seal_quietly, args=(collection,))
                timer.daemon = True
                timer.name = f"vector-seal-{collection}"
                self._seal_timers[collection] = timer
                timer.start()
                return
        self.seal(collection)

    def _seal_quietly(self, collection: str) -> None:
        # A timer thread: a failure here must not be lost, but has nobody to raise to; the
        # next write arms another timer and the sweep (knowledge_sweep) seals every collection.
        try:
            self.seal(collection)
        except Exception:
            logger.warning(
                "sealing %s failed; retried by the next write", collection, exc_info=True
            )

    def unsealed_rows(self, collection: str) -> int:
        """Rows this process wrote to `collection` and has not sealed yet."""
        return self._unsealed.get(collection, 0)

    def load(self, name: str) -> bool:
        """Load a collection: servers evaluate searches and delete expressions against loaded
        segments only. False for one still being created (no index yet): it has no rows, since
        writers insert only once `ensure_collection` has loaded it."""
        if name not in self._ready:
            if not self._indexed(name):
                return False
            self.client.load_collection(name)
            self._ready.add(name)
        return True

    def delete_where(self, expression: str, *, except_collection: str | None = None) -> None:
        for name in self.our_collections():
            if name != except_collection and self.load(name):
                self.client.delete(name, filter=expression)

    def delete_document(self, document_id: int) -> None:
        self.delete_where(f"document_id == {int(document_id)}")

    def delete_knowledge_base(self, kb_id: int, *, except_collection: str | None = None) -> None:
        self.delete_where(f"kb_id == {int(kb_id)}", except_collection=except_collection)

    def delete_chunks(self, *, collection: str, chunk_ids: Iterable[int]) -> None:
        ids = [int(i) for i in chunk_ids]
        if ids:
            self.client.delete(collection, ids=ids)

    # --- reads ------------------------------------------------------------------------------

    def search_vector(
        self, *, collection: str, vector: list[float], kb_ids: list[int], limit: int
    ) -> list[tuple[int, float]]:
        """[(chunk_id, cosine similarity)], best first, only in the given bases."""
        results = self._read(
            collection,
            data=[vector],
            anns_field="vector",
            limit=limit,
            filter=_kb_filter(kb_ids),
            search_params={"metric_type": "COSINE", "params": {"ef": max(64, limit * 2)}},
        )
        return _ranked((_hit_id(hit), float(hit["distance"])) for hit in results[0])

    def search_keyword(
        self, *, collection: str, query: str, kb_ids: list[int], limit: int
    ) -> list[tuple[int, float]]:
        """[(chunk_id, BM25 score)], best first. Lite reports BM25 scores negated, so only the
        order is meaningful; callers rank, never threshold, these."""
        results = self._read(
            collection,
            data=[query],
            anns_field="sparse",
            limit=limit,
            filter=_kb_filter(kb_ids),
            search_params={"metric_type": "BM25"},
        )
        return _ranked((_hit_id(hit), abs(float(hit["distance"]))) for hit in results[0])

    def _read(self, collection: str, **search):
        from pymilvus.exceptions import MilvusException

        try:
            return self.client.search(collection, **search)
        except MilvusException:
            # A restarted server comes back with its collections released, while this process
            # remembers them loaded: searches would fail until a restart. Load it again and
            # retry once; a server that is still down fails again, and that is raised.
            with self._lock:
                self._ready.discard(collection)
            self.load(collection)
            return self.client.search(collection, **search)

    def search_keyword_async(
        self, *, collection: str, query: str, kb_ids: list[int], limit: int
    ) -> Future[list[tuple[int, float]]]:
        """`search_keyword` on one of the store's threads, for a caller with other work to do
        meanwhile (embedding the query, the vector search). The threads are kept: starting
        one per search cost ~12 ms on a loaded two-core box."""
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="vector-search"
                )
            return self._executor.submit(
                self.search_keyword, collection=collection, query=query, kb_ids=kb_ids,
                limit=limit,
            )  # fmt: skip

    def iter_chunk_ids(self, *, collection: str, batch_size: int = 2000) -> Iterator[list[int]]:
        iterator = self.client.query_iterator(
            collection, batch_size=batch_size, filter="chunk_id >= 0", output_fields=["chunk_id"]
        )
        try:
            while batch := iterator.next():
                yield [int(row["chunk_id"]) for row in batch]
        finally:
            iterator.close()

    def count(self, *, collection: str, expression: str = "chunk_id >= 0") -> int:
        rows = self.client.query(collection, filter=expression, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def seal_pending(self) -> None:
        """Seal every collection this process has unsealed writes in, now."""
        for collection in [c for c, rows in self._unsealed.items() if rows]:
            self.seal(collection)

    def close(self) -> None:
        try:
            self.seal_pending()
        finally:
            with self._executor_lock:
                if self._executor is not None:
                    self._executor.shutdown(wait=False)
                    self._executor = None
            self.client.close()


def _kb_filter(kb_ids: list[int]) -> str:
    return f"kb_id in {[int(i) for i in kb_ids]}"


def _ranked(hits) -> list[tuple[int, float]]:
    # Milvus orders equal scores arbitrarily (per segment, per call): a fixed tie order keeps
    # two searches for the same query, and so the fused ranking, reproducible.
    return sorted(hits, key=lambda hit: (-hit[1], hit[0]))


def _hit_id(hit) -> int:
    # Servers key hits by "id", Lite by the primary field's name.
    value = hit.get("id", hit.get("chunk_id"))
    return int(value)


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


def is_unavailable(exc: BaseException) -> bool:
    """The vector store could not be reached (stopped, restarting, network): a dependency
    failure to retry later, not a bug."""
    from pymilvus.exceptions import MilvusException

    return isinstance(exc, (MilvusException, ConnectionError, TimeoutError))


_stores: dict[tuple[str, str, str], VectorStore] = {}
_stores_lock = threading.Lock()


def get_vector_store() -> VectorStore:
    """The process's store for settings.MILVUS_URI (read at call time, so tests can switch)."""
    uri = settings.MILVUS_URI
    if not uri:
        raise ImproperlyConfigured("MILVUS_URI is not set; the runner starts Milvus Lite for it.")
    key = (uri, settings.MILVUS_TOKEN, settings.KNOWLEDGE_COLLECTION_PREFIX)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = VectorStore(uri=uri, token=key[1], prefix=key[2])
            _stores[key] = store
        return store


def forget_vector_stores() -> None:
    """Drop cached clients (tests that stop a server; a process that changes MILVUS_URI)."""
    with _stores_lock:
        for store in _stores.values():
            try:
                store.close()
            except Exception:  # a client of a server that is gone may fail to close
                logger.debug("closing a vector store client failed", exc_info=True)
        _stores.clear()


on_reset(forget_vector_stores)
