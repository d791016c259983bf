"""Writes for knowledge bases: uploads, the vectorisation pipeline, re-indexing, deletes, the
periodic sweep, rebuilding the vector store from the database, and staff evaluation runs.

Invariants:
- Chunk rows are the truth; a Milvus row exists only for a Chunk row (the sweep removes
  strays) and retrieval reads texts back from Chunk rows only.
- A document has chunks only while it is `ready` or being re-indexed from `ready`; a failed
  run leaves none, so "failed" never answers questions.
- Every change that can alter search results bumps the base's retrieval generation.
- A document's `attempts` counts runs begun since one last ended; only a run that never
  returned (its worker process killed) leaves it raised, so a file that kills workers is
  tried KNOWLEDGE_INGEST_MAX_ATTEMPTS times, then failed, whatever brings it back.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from openspark.core.cache import cache_bump, user_scope
from openspark.core.errors import ApplicationError, Conflict
from openspark.core.models import Notification
from openspark.core.services import (
    notification_send,
    task_enqueue,
    task_id_new,
    task_progress_set,
    task_progress_step,
)
from openspark.llm.base import EmbeddingProvider, LLMError
from throttling.models import Plan
from throttling.selectors import plan_for_user

from . import cache as retrieval_cache
from . import evaluation, retrieval
from .chunking import chunk_sections
from .embedders import default_embedding_model, get_embedder
from .metrics import document_ingested
from .models import (
    Chunk,
    Document,
    EvaluationModeMetrics,
    EvaluationResult,
    EvaluationRun,
    EvaluationSet,
    KnowledgeBase,
)
from .parsing import (
    FileTypeMismatch,
    ParseError,
    check_content_matches,
    extension_of,
    parse_document,
)
from .selectors import knowledge_usage_get
from .vectorstore import VectorRow, get_vector_store
from .vectorstore import is_unavailable as vector_store_unavailable

logger = logging.getLogger(__name__)

# Chunk settings or model changes make every stored vector stale.
REINDEX_FIELDS = ("chunk_size", "chunk_overlap", "embedding_model")
UPDATABLE_FIELDS = ("name", "description", "visibility", "top_k", "score_threshold",
                    *REINDEX_FIELDS)  # fmt: skip


class FileTooLarge(ApplicationError):
    status_code = 413
    code = "file_too_large"


class StorageFull(ApplicationError):
    status_code = 507
    code = "insufficient_storage"


class UnsupportedFileType(ApplicationError):
    status_code = 415
    code = "unsupported_file_type"


class QuotaExceeded(ApplicationError):
    """A plan's storage, document or knowledge-base quota; waiting does not help (unlike the
    token quota's 429), deleting or upgrading does."""

    status_code = 403
    code = "quota_exceeded"


class RetryableIngestError(Exception):
    """A transient failure (provider busy, vector store unreachable): try the task again."""


# --- storage quotas ---------------------------------------------------------------------------


def _owner_plan_locked(owner_id: int) -> Plan:
    """The owner's plan, with the owner's row locked for the rest of the transaction: their
    uploads and base creations count and store one at a time, so parallel requests cannot
    overshoot a quota (PostgreSQL; on SQLite every write transaction is IMMEDIATE, which
    serialises them already)."""
    owner = get_user_model().objects.select_for_update().get(pk=owner_id)
    return plan_for_user(owner)


def _refuse(*, kind: str, message: str, limit: int, used: int, needed: int) -> QuotaExceeded:
    return QuotaExceeded(
        message, details={"kind": kind, "limit": limit, "used": used, "needed": needed}
    )


def _storage_quota_check(*, owner_id: int, files: int, size: int) -> None:
    """Call inside the transaction that stores the files, before storing any."""
    plan = _owner_plan_locked(owner_id)
    usage = knowledge_usage_get(owner_id=owner_id)
    limit = plan.document_quota
    if limit and usage.documents + files > limit:
        raise _refuse(
            kind="documents",
            message=_(
                "Your plan allows %(limit)s documents; you have %(used)s and this upload adds "
                "%(needed)s. Delete documents or upgrade your plan."
            )
            % {"limit": limit, "used": usage.documents, "needed": files},
            limit=limit,
            used=usage.documents,
            needed=files,
        )
    limit = plan.storage_quota_bytes
    if limit and usage.storage_bytes + size > limit:
        raise _refuse(
            kind="storage_bytes",
            message=_(
                "Your plan allows %(limit)s of documents; you use %(used)s and this upload adds "
                "%(needed)s. Delete documents or upgrade your plan."
            )
            % {
                "limit": filesizeformat(limit),
                "used": filesizeformat(usage.storage_bytes),
                "needed": filesizeformat(size),
            },
            limit=limit,
            used=usage.storage_bytes,
            needed=size,
        )


def _knowledge_base_quota_check(*, owner_id: int) -> None:
    plan = _owner_plan_locked(owner_id)
    used = knowledge_usage_get(owner_id=owner_id).knowledge_bases
    limit = plan.knowledge_base_quota
    if limit and used + 1 > limit:
        raise _refuse(
            kind="knowledge_bases",
            message=_(
                "Your plan allows %(limit)s knowledge bases and you have %(used)s. Delete one "
                "or upgrade your plan."
            )
            % {"limit": limit, "used": used},
            limit=limit,
            used=used,
            needed=1,
        )


# --- knowledge bases --------------------------------------------------------------------------


def _validate_chunking(*, chunk_size: int, chunk_overlap: int) -> None:
    if not 100 <= chunk_size <= 4000:
        raise ApplicationError(_("Chunk size must be between 100 and 4000 characters."))
    if not 0 <= chunk_overlap <= chunk_size // 2:
        raise ApplicationError(_("Chunk overlap must be between 0 and half the chunk size."))


@transaction.atomic
def knowledge_base_create(
    *,
    owner,
    name: str,
    description: str = "",
    visibility: str = KnowledgeBase.Visibility.PRIVATE,
    shared_with: Iterable = (),
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    top_k: int | None = None,
    score_threshold: float | None = None,
    enforce_quota: bool = True,
) -> KnowledgeBase:
    """A new base owned by `owner`, within their plan's knowledge-base quota (403
    `quota_exceeded`) unless `enforce_quota` is off (operator tools)."""
    chunk_size = chunk_size or settings.KNOWLEDGE_CHUNK_SIZE
    chunk_overlap = settings.KNOWLEDGE_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap
    _validate_chunking(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    if enforce_quota:
        _knowledge_base_quota_check(owner_id=owner.id)
    base = KnowledgeBase.objects.create(
        owner=owner,
        name=name,
        description=description,
        visibility=visibility,
        # Fixed at creation: a later change of the deployment default must not mix models.
        embedding_model=default_embedding_model(),
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        top_k=top_k or settings.KNOWLEDGE_TOP_K,
        score_threshold=score_threshold or 0.0,
    )
    if shared_with:
        base.shared_with.set(shared_with)
    cache_bump(scope=user_scope(owner.id))  # GET me/ shows the bases used
    return base


def knowledge_base_update(
    *, knowledge_base: KnowledgeBase, user, data: dict, shared_with: Iterable | None = None
) -> tuple[KnowledgeBase, str | None]:
    """Apply changes; returns the base and, when its vectors became stale, the id of the
    re-index task that was queued."""
    changed = [f for f in UPDATABLE_FIELDS if f in data and getattr(knowledge_base, f) != data[f]]
    for field in changed:
        setattr(knowledge_base, field, data[field])
    _validate_chunking(
        chunk_size=knowledge_base.chunk_size, chunk_overlap=knowledge_base.chunk_overlap
    )
    if knowledge_base.embedding_model:
        get_embedder(knowledge_base.embedding_model)  # fail now, not in the worker
    task_id = None
    with transaction.atomic():
        if changed:
            knowledge_base.save(update_fields=[*changed, "updated_at"])
        if shared_with is not None:
            knowledge_base.shared_with.set(shared_with)
        if any(f in REINDEX_FIELDS for f in changed):
            task_id = knowledge_base_reindex(knowledge_base=knowledge_base, user=user)
    retrieval_cache.bump(knowledge_base.id)
    return knowledge_base, task_id


def knowledge_base_delete(*, knowledge_base: KnowledgeBase) -> None:
    kb_id = knowledge_base.id
    files = [d.file.name for d in knowledge_base.documents.all() if d.file]
    with transaction.atomic():
        knowledge_base.delete()
        cache_bump(scope=user_scope(knowledge_base.owner_id))
    # Rows first: from this moment no search can return the text (retrieval reads texts from
    # rows). A failure below leaves only unreachable vectors, which the sweep removes.
    retrieval_cache.bump(kb_id)
    _delete_vectors(lambda store: store.delete_knowledge_base(kb_id))
    _delete_files(files)


def knowledge_base_reindex(*, knowledge_base: KnowledgeBase, user) -> str:
    from .tasks import update_knowledge_base

    return task_enqueue(task=update_knowledge_base, args=[knowledge_base.id], user=user)


def knowledge_base_reindex_run(*, knowledge_base_id: int) -> int:
    """Body of `update_knowledge_base`: drop the base's vectors from every collection (its
    model may have changed) and queue every document again. Returns how many were queued."""
    base = KnowledgeBase.objects.filter(id=knowledge_base_id).first()
    if base is None:
        return 0
    store = get_vector_store()
    model = base.embedding_model or default_embedding_model()
    current = store.collection_name(model=model, dimension=get_embedder(model).dimension)
    # Vectors in the current model's collection stay until each document swaps its own, so
    # the base keeps answering while it is re-indexed.
    store.delete_knowledge_base(base.id, except_collection=current)
    count = 0
    documents = base.documents.select_related("uploaded_by")
    total = documents.count()
    for document in documents:
        with transaction.atomic():
            document_reindex(document=document, user=document.uploaded_by)
        count += 1
        task_progress_step(done=count, total=total)
    retrieval_cache.bump(base.id)
    return count


# --- documents --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CheckedUpload:
    file: UploadedFile
    file_type: str
    sha256: str


def _check_upload(*, knowledge_base: KnowledgeBase, upload: UploadedFile) -> _CheckedUpload:
    name = upload.name or ""
    file_type = extension_of(name)
    if file_type not in settings.KNOWLEDGE_ALLOWED_TYPES:
        raise UnsupportedFileType(
            _("Unsupported file type; allowed: %(types)s.")
            % {"types": ", ".join(settings.KNOWLEDGE_ALLOWED_TYPES)},
            details={"filename": name},
        )
    limit = settings.KNOWLEDGE_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise FileTooLarge(
            _("The file is larger than the limit of %(mb)s MB.") % {"mb": limit // (1024 * 1024)},
            details={"filename": name, "max_bytes": limit},
        )
    upload.seek(0)
    head = upload.read(8192)
    try:
        check_content_matches(file_type=file_type, head=head)
    except FileTypeMismatch as exc:
        raise UnsupportedFileType(str(exc), details={"filename": name}) from None
    digest = hashlib.sha256()
    upload.seek(0)
    for piece in upload.chunks():
        digest.update(piece)
    upload.seek(0)
    return _CheckedUpload(file=upload, file_type=file_type, sha256=digest.hexdigest())


def _duplicate_error(*, name: str, existing: Document | None) -> Conflict:
    details = {"filename": name}
    if existing is not None:
        details["document_id"] = existing.id
    return Conflict(_("This file is already in the knowledge base."), details=details)


def documents_upload(
    *,
    knowledge_base: KnowledgeBase,
    user,
    files: list[UploadedFile],
    enforce_quota: bool = True,
) -> list[tuple[Document, str]]:
    """Store the files and queue their vectorisation. All or nothing: one bad file (type,
    size, duplicate) or a request beyond the base owner's document or storage quota (403
    `quota_exceeded`; not checked when `enforce_quota` is off: staff in the admin, operator
    tools) rejects the request before anything is stored."""
    if not files:
        raise ApplicationError(_("Attach at least one file."))
    if len(files) > settings.KNOWLEDGE_MAX_FILES_PER_UPLOAD:
        raise ApplicationError(
            _("At most %(n)d files per upload.") % {"n": settings.KNOWLEDGE_MAX_FILES_PER_UPLOAD}
        )
    checked = [_check_upload(knowledge_base=knowledge_base, upload=f) for f in files]
    seen: set[str] = set()
    for item in checked:
        existing = knowledge_base.documents.filter(sha256=item.sha256).first()
        if existing is not None or item.sha256 in seen:
            raise _duplicate_error(name=item.file.name, existing=existing)
        seen.add(item.sha256)

    from .tasks import vectorize_document

    created: list[tuple[Document, str]] = []
    try:
        with transaction.atomic():
            if enforce_quota:
                _storage_quota_check(
                    owner_id=knowledge_base.owner_id,
                    files=len(checked),
                    size=sum(item.file.size or 0 for item in checked),
                )
            for item in checked:
                document = Document(
                    knowledge_base=knowledge_base,
                    uploaded_by=user,
                    title=(item.file.name or "document")[:255],
                    file_type=item.file_type,
                    size=item.file.size or 0,
                    sha256=item.sha256,
                )
                _file_store(document, item.file)
                document.save()
                task_id = task_enqueue(task=vectorize_document, args=[document.id], user=user)
                document.task_id = task_id
                document.save(update_fields=["task_id"])
                created.append((document, task_id))
            cache_bump(scope=user_scope(knowledge_base.owner_id))  # GET me/ shows the storage
    except IntegrityError:
        # Two uploads of the same file raced past the check above; the constraint decided.
        _delete_files([d.file.name for d, _ in created])
        raise _duplicate_error(name=checked[0].file.name, existing=None) from None
    except StorageFull:
        _delete_files([d.file.name for d, _ in created])  # the files stored before this one
        raise
    return created


def _file_store(document: Document, upload: UploadedFile) -> None:
    """Save the upload under a random name (the title keeps the user's), one nobody else can
    get and short enough never to be cut, so what a failed write left behind (the disk filled
    up halfway) is ours to delete; a full disk is a 507."""
    name = f"{uuid.uuid4().hex}.{document.file_type}"
    try:
        document.file.save(name, upload, save=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        from django.core.files.storage import default_storage

        partial = document.file.field.generate_filename(document, name)
        try:
            default_storage.delete(partial)
        except OSError:
            logger.warning("Could not delete the partly written %s", partial)
        logger.error("No space left to store an upload: %s", exc)
        raise StorageFull(
            _("There is no room left to store files right now; try again later."),
            details={"filename": upload.name},
        ) from None


def document_reindex(*, document: Document, user) -> str:
    """Queue the document again (re-index, retry) with a fresh count of attempts. The new
    task id supersedes any older task still queued or running for it."""
    return _document_requeue(document=document, user=user, attempts=0)


def _document_requeue(*, document: Document, user, **fields) -> str:
    from .tasks import vectorize_document

    task_id = task_enqueue(task=vectorize_document, args=[document.id], user=user)
    # Its chunks (if it was ready) stay searchable until the new run swaps them.
    Document.objects.filter(id=document.id).update(
        task_id=task_id,
        status=Document.Status.PENDING,
        progress=0,
        error="",
        updated_at=timezone.now(),
        **fields,
    )
    document.refresh_from_db()
    return task_id


def document_delete(*, document: Document) -> None:
    kb_id, document_id, file_name = document.knowledge_base_id, document.id, document.file.name
    owner_id = document.knowledge_base.owner_id
    with transaction.atomic():
        document.delete()
        cache_bump(scope=user_scope(owner_id))  # GET me/ shows the storage used
    retrieval_cache.bump(kb_id)
    _delete_vectors(lambda store: store.delete_document(document_id))
    _delete_files([file_name] if file_name else [])


def _delete_vectors(action: Callable) -> None:
    try:
        action(get_vector_store())
    except Exception:
        # The rows are gone, so nothing is reachable; the sweep retries the vector delete.
        logger.exception("Deleting vectors failed; the sweep will remove them")


def _delete_files(names: list[str]) -> None:
    from django.core.files.storage import default_storage

    def delete() -> None:
        for name in names:
            try:
                default_storage.delete(name)
            except OSError:
                logger.warning("Could not delete stored file %s", name)

    transaction.on_commit(delete)


# --- the pipeline -----------------------------------------------------------------------------


def _set_progress(document: Document, progress: int, **fields) -> None:
    Document.objects.filter(id=document.id).update(
        progress=progress, updated_at=timezone.now(), **fields
    )
    task_progress_set(task_id=document.task_id or None, progress=progress)


def document_vectorize(*, document_id: int, task_id: str | None = None) -> str:
    """Parse, split, embed and store one document; idempotent (a re-run replaces its chunks
    and vectors). `task_id` is the running task's id: a task that is no longer the
    document's current one (re-index requested meanwhile, sweep re-queue) does nothing.
    Returns the final status. Raises RetryableIngestError for transient failures."""
    document = Document.objects.select_related("knowledge_base").filter(id=document_id).first()
    stale = _run_stale(document, task_id)
    if stale:
        return stale
    if document.attempts >= settings.KNOWLEDGE_INGEST_MAX_ATTEMPTS:
        return _fail(document, _interrupted_reason(document.attempts), timings={})
    was_ready = document.status == Document.Status.READY
    _run_claim(document)
    timings: dict[str, float] = {}
    out_of_memory = False
    try:
        drafts = _run_parse(document, timings)
        model, embedder = _run_embedder(document.knowledge_base)
        vectors = _run_embed(document, embedder, drafts, timings)
        chunk_count = _run_store(document, task_id, model, embedder, drafts, vectors, timings)
    except _RunStale as exc:
        return exc.status
    except ParseError as exc:
        return _fail(document, str(exc), timings=timings)
    except SoftTimeLimitExceeded:
        return _fail(document, _time_limit_reason(), timings=timings)
    except MemoryError:
        # An allocation past the pool child's RLIMIT_DATA (knowledge/apps.py). Failed below,
        # once the traceback, and what the parser had built, are released.
        out_of_memory = True
    except LLMError as exc:
        if exc.retryable:
            _run_ended(document)
            raise RetryableIngestError(exc.message) from exc
        return _fail(document, exc.message, timings=timings)
    except Exception as exc:
        if vector_store_unavailable(exc):
            _run_ended(document)
            logger.warning("Document %s: the vector store is unavailable: %s", document_id, exc)
            # Also the document's error if the retries run out: for its owner, not the driver's.
            raise RetryableIngestError(
                _("The search index could not be reached; re-index the document to try again.")
            ) from exc
        logger.exception("Vectorising document %s failed", document_id)
        return _fail(
            document,
            _("Processing failed because of an internal error; an administrator can see the logs."),
            timings=timings,
        )
    if out_of_memory:
        return _fail(document, _memory_limit_reason(), timings=timings)
    return _run_finish(
        document, model=model, chunk_count=chunk_count, was_ready=was_ready, timings=timings
    )


class _RunStale(Exception):
    """The document was deleted, or its run superseded, while this run worked on it."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _run_stale(document: Document | None, task_id: str | None) -> str:
    """The status a run that must not touch the document returns ("missing", "superseded"),
    or "" when it may go on."""
    if document is None:
        return "missing"
    if task_id and document.task_id and document.task_id != task_id:
        return "superseded"
    return ""


def _run_claim(document: Document) -> None:
    # Attempts are counted before any work: a run whose process dies never gets to reset them.
    _set_progress(
        document,
        1,
        status=Document.Status.PROCESSING,
        error="",
        processing_started_at=timezone.now(),
        attempts=F("attempts") + 1,
    )


def _run_parse(document: Document, timings: dict[str, float]) -> list:
    """The file's text as chunk drafts (ParseError for a file that cannot be read)."""
    base = document.knowledge_base
    started = time.perf_counter()
    with document.file.open("rb") as handle:
        data = handle.read()
    sections = parse_document(data=data, file_type=document.file_type)
    timings["parse"] = time.perf_counter() - started
    started = time.perf_counter()
    drafts = chunk_sections(sections, chunk_size=base.chunk_size, chunk_overlap=base.chunk_overlap)
    timings["split"] = time.perf_counter() - started
    _set_progress(document, 10)
    return drafts


def _run_embedder(base: KnowledgeBase) -> tuple[str, EmbeddingProvider]:
    model = base.embedding_model or default_embedding_model()
    return model, get_embedder(model)


def _run_embed(
    document: Document, embedder: EmbeddingProvider, drafts: list, timings: dict[str, float]
) -> list[list[float]]:
    """One vector per draft, in batches, progress moving from 10 to 90 %."""
    started = time.perf_counter()
    vectors: list[list[float]] = []
    batch = max(1, settings.KNOWLEDGE_EMBED_BATCH_SIZE)
    for start in range(0, len(drafts), batch):
        vectors.extend(embedder.embed([d.text for d in drafts[start : start + batch]]))
        _set_progress(document, 10 + int(80 * min(len(drafts), start + batch) / len(drafts)))
    timings["embed"] = time.perf_counter() - started
    return vectors


def _run_store(
    document: Document,
    task_id: str | None,
    model: str,
    embedder: EmbeddingProvider,
    drafts: list,
    vectors: list[list[float]],
    timings: dict[str, float],
) -> int:
    """Replace the document's chunks and vectors with the new ones; returns the chunk count.
    Raises _RunStale when the document went away or another run took it over meanwhile."""
    started = time.perf_counter()
    store = get_vector_store()
    collection = store.ensure_collection(model=model, dimension=embedder.dimension)
    chunks, old_ids = _chunks_replace(document, task_id, drafts)
    _vectors_replace(
        store,
        collection,
        rows=[
            VectorRow(c.id, document.knowledge_base_id, document.id, c.text, v)
            for c, v in zip(chunks, vectors, strict=True)
        ],
        old_ids=old_ids,
    )
    timings["store"] = time.perf_counter() - started
    return len(chunks)


def _chunks_replace(
    document: Document, task_id: str | None, drafts: list
) -> tuple[list[Chunk], list[int]]:
    """The new Chunk rows (with ids) and the ids of the rows they replace, under the
    document's row lock, so a run superseded meanwhile writes nothing."""
    with transaction.atomic():
        current = Document.objects.select_for_update().filter(id=document.id).first()
        stale = _run_stale(current, task_id)
        if stale:
            raise _RunStale(stale)
        old_ids = list(current.chunks.values_list("id", flat=True))
        Chunk.objects.filter(id__in=old_ids).delete()
        chunks = Chunk.objects.bulk_create(
            Chunk(
                document=document,
                knowledge_base_id=document.knowledge_base_id,
                ordinal=ordinal,
                text=draft.text,
                token_count=draft.token_count,
                page=draft.page,
                section=draft.section,
            )
            for ordinal, draft in enumerate(drafts)
        )
    return chunks, old_ids


def _vectors_replace(store, collection: str, *, rows: list[VectorRow], old_ids: list[int]) -> None:
    """The document's vectors in the store once its chunk rows are committed: anything the
    store needs before they are searchable (a flush, an index) belongs here."""
    store.upsert(collection=collection, rows=rows)
    # Old vectors go after the new ones are in, so a re-indexed document stays findable.
    store.delete_chunks(collection=collection, chunk_ids=old_ids)


def _run_finish(
    document: Document, *, model: str, chunk_count: int, was_ready: bool, timings: dict
) -> str:
    Document.objects.filter(id=document.id).update(
        status=Document.Status.READY,
        progress=100,
        chunk_count=chunk_count,
        attempts=0,
        error="",
        processed_at=timezone.now(),
        timings={k: round(v, 4) for k, v in timings.items()},
        updated_at=timezone.now(),
    )
    task_progress_set(task_id=document.task_id or None, progress=100)
    document_ingested(model=model, chunks=chunk_count, timings=timings)
    retrieval_cache.bump(document.knowledge_base_id)
    if document.uploaded_by_id and not was_ready:
        notification_send(
            user=document.uploaded_by,
            kind=Notification.Kind.DOCUMENT_READY,
            title=_("“%(title)s” is ready") % {"title": document.title},
            body=_("%(n)d passages can now be searched.") % {"n": chunk_count},
            level="success",
            url=f"/knowledge/?kb={document.knowledge_base_id}",
        )
    return Document.Status.READY


def document_fail(*, document_id: int, reason: str) -> None:
    """Give up on a document after its retries ran out (called by the task)."""
    document = Document.objects.filter(id=document_id).first()
    if document is not None:
        _fail(document, reason, timings={})


def document_time_limit_exceeded(*, document_id: int, task_id: str) -> None:
    """Run `task_id` was stopped at its time limit outside the pipeline's own handling: killed
    at the hard limit (this is then called in the worker's main process, the pool child being
    gone), or stopped at the soft one while failing. A newer run of the document, or one
    that got to its end, is left alone."""
    document = Document.objects.filter(
        id=document_id, status__in=[Document.Status.PENDING, Document.Status.PROCESSING]
    ).first()
    if document is not None and document.task_id in ("", task_id):
        _fail(document, _time_limit_reason(), timings={})


def _time_limit_reason() -> str:
    return _("Processing took longer than %(seconds)d s and was stopped.") % {
        "seconds": settings.KNOWLEDGE_INGEST_TIME_LIMIT
    }


def _memory_limit_reason() -> str:
    return _("Processing needed more than %(mb)d MB of memory and was stopped.") % {
        "mb": settings.KNOWLEDGE_INGEST_MEMORY_LIMIT_MB
    }


def _interrupted_reason(attempts: int) -> str:
    return _(
        "Processing was cut short %(n)d times (its worker process ended, for example for lack "
        "of memory), so it was given up."
    ) % {"n": attempts}


def _run_ended(document: Document) -> None:
    Document.objects.filter(id=document.id).update(attempts=0)


def _fail(document: Document, reason: str, *, timings: dict) -> str:
    old_ids = list(document.chunks.values_list("id", flat=True))
    with transaction.atomic():
        Chunk.objects.filter(id__in=old_ids).delete()
        Document.objects.filter(id=document.id).update(
            status=Document.Status.FAILED,
            error=reason[:2000],
            chunk_count=0,
            attempts=0,
            processed_at=timezone.now(),
            timings={k: round(v, 4) for k, v in timings.items()},
            updated_at=timezone.now(),
        )
    task_progress_set(task_id=document.task_id or None, progress=100)
    retrieval_cache.bump(document.knowledge_base_id)
    if old_ids:
        _delete_vectors(lambda store: store.delete_document(document.id))
    if document.uploaded_by_id:
        notification_send(
            user=document.uploaded_by,
            kind=Notification.Kind.DOCUMENT_FAILED,
            title=_("“%(title)s” could not be processed") % {"title": document.title},
            body=reason,
            level="error",
            url=f"/knowledge/?kb={document.knowledge_base_id}",
        )
    return Document.Status.FAILED


# --- maintenance ------------------------------------------------------------------------------


def knowledge_sweep(*, now=None) -> dict[str, int]:
    """Periodic (beat): re-queue documents stuck in `pending`/`processing` past the timeout
    (a worker died, a message was lost) — keeping their count of attempts, so one whose runs
    keep dying is failed instead — remove vectors whose chunks no longer exist, and seal the
    vector store (`vectors_seal`)."""
    now = now or timezone.now()
    cutoff = now - timezone.timedelta(seconds=settings.KNOWLEDGE_STUCK_AFTER_SECONDS)
    stuck = Document.objects.filter(
        status__in=[Document.Status.PENDING, Document.Status.PROCESSING], updated_at__lt=cutoff
    ).select_related("uploaded_by")
    requeued = failed = 0
    for document in stuck:
        if document.attempts >= settings.KNOWLEDGE_INGEST_MAX_ATTEMPTS:
            _fail(document, _interrupted_reason(document.attempts), timings={})
            failed += 1
            continue
        with transaction.atomic():
            _document_requeue(document=document, user=document.uploaded_by)
        requeued += 1
    report = {
        "requeued": requeued,
        "failed": failed,
        "orphan_vectors_removed": vectors_remove_orphans(),
    }
    vectors_seal()
    return report


def vectors_seal() -> None:
    """Seal every collection (Milvus Lite; nothing on a server; VectorStore.seal)."""
    store = get_vector_store()
    if store.is_lite:
        for collection in store.our_collections():
            store.seal(collection)


def vectors_seal_when_idle() -> bool:
    """Called after each ingestion run, whatever its outcome: when no document is waiting or
    being processed any more, a burst of uploads has ended, and its vectors are sealed into
    one indexed segment now (one segment per burst keeps Lite's per-segment BM25 statistics
    what they were while the rows waited together; docs/knowledge.md). The run that ends
    last sees every other one finished, so one of them always seals. Returns whether it did."""
    if not get_vector_store().is_lite:
        return False
    busy = Document.objects.filter(
        status__in=[Document.Status.PENDING, Document.Status.PROCESSING]
    ).exists()
    if busy:
        return False
    vectors_seal()
    return True


def vectors_remove_orphans() -> int:
    store = get_vector_store()
    removed = 0
    for collection in store.our_collections():
        if not store.load(collection):
            continue  # being created by another process: no rows yet
        for ids in store.iter_chunk_ids(collection=collection):
            existing = set(Chunk.objects.filter(id__in=ids).values_list("id", flat=True))
            orphans = [i for i in ids if i not in existing]
            store.delete_chunks(collection=collection, chunk_ids=orphans)
            removed += len(orphans)
    return removed


def vectors_rebuild(
    *, knowledge_base_id: int | None = None, log: Callable[[str], None] = lambda _m: None
) -> int:
    """Re-embed stored chunks and write them again (after a Milvus data loss, an index change
    or a model upgrade); parsing is not redone. Returns the number of vectors written."""
    store = get_vector_store()
    bases = KnowledgeBase.objects.all()
    if knowledge_base_id is not None:
        bases = bases.filter(id=knowledge_base_id)
    written = 0
    batch = max(1, settings.KNOWLEDGE_EMBED_BATCH_SIZE)
    for base in bases:
        store.delete_knowledge_base(base.id)
        model = base.embedding_model or default_embedding_model()
        embedder = get_embedder(model)
        collection = store.ensure_collection(model=model, dimension=embedder.dimension)
        chunks = Chunk.objects.filter(knowledge_base=base).order_by("id")
        pending: list[Chunk] = []
        for chunk in chunks.iterator(chunk_size=1000):
            pending.append(chunk)
            if len(pending) == batch:
                written += _rebuild_batch(store, collection, embedder, pending)
                pending = []
        if pending:
            written += _rebuild_batch(store, collection, embedder, pending)
        store.seal(collection)
        retrieval_cache.bump(base.id)
        log(f"{base.name} (#{base.id}): {written} vectors so far")
    if knowledge_base_id is None:
        vectors_remove_orphans()
    return written


def _rebuild_batch(store, collection: str, embedder, chunks: list[Chunk]) -> int:
    vectors = embedder.embed([c.text for c in chunks])
    store.upsert(
        collection=collection,
        rows=[
            VectorRow(c.id, c.knowledge_base_id, c.document_id, c.text, v)
            for c, v in zip(chunks, vectors, strict=True)
        ],
    )
    return len(chunks)


# --- retrieval evaluation (staff) --------------------------------------------------------------
#
# A run searches every question of a set in each mode as deep as evaluation.DEPTH and keeps,
# per question, the rank of the first relevant passage and, where it missed (not among the
# base's top_k, what chat would have been given), what came instead. Invariant: a run's
# results and figures are written once, in one transaction, by the execution that moves it
# from `running` to `completed`; a redelivered or duplicate task finds it finished and does
# nothing, and one that restarts an interrupted run computes everything again.

MISSES_SHOWN = 5
SNIPPET_CHARS = 240


class EvaluationFailed(Exception):
    """A run ended failed (it holds the same reason): raised so its task ends in FAILURE."""


def _evaluation_file_check(*, upload: UploadedFile) -> str:
    name = upload.name or ""
    file_type = evaluation.file_type_of(name)
    if file_type not in evaluation.FILE_TYPES:
        raise UnsupportedFileType(
            _("Upload questions as a .csv or .jsonl file."), details={"filename": name}
        )
    limit = settings.KNOWLEDGE_EVAL_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise FileTooLarge(
            _("The question file is larger than the limit of %(size)s.")
            % {"size": filesizeformat(limit)},
            details={"filename": name, "max_bytes": limit},
        )
    return file_type


@dataclass(frozen=True, slots=True)
class _DocumentIndex:
    """How question files name documents: an id of the base, the exact title, or the title
    (or its name without the extension) in any case."""

    ids: frozenset[int]
    by_title: dict[str, list[int]]
    by_folded: dict[str, list[int]]

    @classmethod
    def of(cls, base: KnowledgeBase) -> _DocumentIndex:
        by_title: dict[str, list[int]] = {}
        by_folded: dict[str, list[int]] = {}
        ids = []
        for document_id, title in base.documents.values_list("id", "title"):
            ids.append(document_id)
            by_title.setdefault(title, []).append(document_id)
            folded = {evaluation.normalise(title), evaluation.normalise(title.rsplit(".", 1)[0])}
            for key in folded:
                by_folded.setdefault(key, []).append(document_id)
        return cls(frozenset(ids), by_title, by_folded)

    def resolve(self, reference: str) -> tuple[int | None, str]:
        """(document id, "") or (None, why not)."""
        if reference.isdigit() and int(reference) in self.ids:
            return int(reference), ""
        found = self.by_title.get(reference) or self.by_folded.get(
            evaluation.normalise(reference), []
        )
        if len(set(found)) > 1:
            return None, _("several documents are called “%(name)s”; give its id") % {
                "name": reference
            }
        if not found:
            return None, _("no document “%(name)s” in this knowledge base") % {"name": reference}
        return found[0], ""


def evaluation_set_create(
    *, knowledge_base: KnowledgeBase, user, upload: UploadedFile, name: str = ""
) -> EvaluationSet:
    """Parse and validate a question file for the base: 415 for a file that is not .csv or
    .jsonl, 413 past KNOWLEDGE_EVAL_MAX_UPLOAD_BYTES, 400 naming every wrong row (a document
    that is not in the base is wrong too). Nothing is stored unless every row is right."""
    file_type = _evaluation_file_check(upload=upload)
    filename = upload.name or "questions"
    upload.seek(0)
    try:
        questions, errors = evaluation.parse_question_file(
            name=filename, data=upload.read(), max_questions=settings.KNOWLEDGE_EVAL_MAX_QUESTIONS
        )
    except evaluation.QuestionFileError as exc:
        raise ApplicationError(str(exc), details={"filename": filename}) from None
    documents = _DocumentIndex.of(knowledge_base)
    for question in questions:
        if question.document:
            _id, problem = documents.resolve(question.document)
            if problem:
                errors.append(evaluation.RowError(question.row, problem))
    if errors:
        errors.sort(key=lambda error: error.row)
        shown = errors[:100]
        rows = ", ".join(str(error.row) for error in shown[:20])
        raise ApplicationError(
            ngettext(
                "%(n)d row is wrong (row %(rows)s): %(first)s",
                "%(n)d rows are wrong (rows %(rows)s); the first: %(first)s",
                len(errors),
            )
            % {"n": len(errors), "rows": rows, "first": errors[0].message},
            details={
                "filename": filename,
                "error_count": len(errors),
                "errors": [error.as_dict() for error in shown],
            },
        )
    return EvaluationSet.objects.create(
        knowledge_base=knowledge_base,
        name=(name.strip() or filename)[:200],
        filename=filename[:255],
        file_type=file_type,
        questions=[question.as_dict() for question in questions],
        question_count=len(questions),
        created_by=user,
    )


def evaluation_set_delete(*, evaluation_set: EvaluationSet) -> None:
    """The set and its runs; a run in progress finds its row gone and stops writing."""
    evaluation_set.delete()


def _evaluation_snapshot(base: KnowledgeBase) -> dict:
    return {
        "chunk_size": base.chunk_size,
        "chunk_overlap": base.chunk_overlap,
        "embedding_model": base.embedding_model or default_embedding_model(),
        "top_k": base.top_k,
        "score_threshold": base.score_threshold,
        "documents": base.documents.filter(status=Document.Status.READY).count(),
        "chunks": base.chunks.count(),
        "depth": evaluation.DEPTH,
    }


def evaluation_run_start(*, evaluation_set: EvaluationSet, user) -> tuple[EvaluationRun, str]:
    """Queue a run of the set (409 while the base's documents are being processed, when it
    has none ready, or while another run of the set is unfinished). Returns it and its task
    id."""
    from .tasks import evaluate_retrieval

    base = evaluation_set.knowledge_base
    busy = base.documents.filter(
        status__in=[Document.Status.PENDING, Document.Status.PROCESSING]
    ).count()
    if busy:
        raise Conflict(
            ngettext(
                "%(n)d document is still being processed; evaluate once it is ready.",
                "%(n)d documents are still being processed; evaluate once they are ready.",
                busy,
            )
            % {"n": busy},
            details={"documents_in_progress": busy},
        )
    if not base.documents.filter(status=Document.Status.READY).exists():
        raise Conflict(_("The knowledge base has no ready documents to search."))
    with transaction.atomic():
        unfinished = evaluation_set.runs.filter(
            status__in=[EvaluationRun.Status.PENDING, EvaluationRun.Status.RUNNING]
        ).first()
        stuck = timezone.now() - timezone.timedelta(seconds=settings.KNOWLEDGE_STUCK_AFTER_SECONDS)
        if unfinished is not None and (unfinished.started_at or unfinished.created_at) < stuck:
            # Its task was lost (a worker gone for good): it will never finish by itself.
            evaluation_run_fail(
                run_id=unfinished.id,
                reason=_("The run did not finish within %(s)d s and was given up.")
                % {"s": settings.KNOWLEDGE_STUCK_AFTER_SECONDS},
            )
            unfinished = None
        if unfinished is not None:
            raise Conflict(
                _("A run of this set is already in progress."),
                details={"run_id": unfinished.id, "task_id": unfinished.task_id},
            )
        task_id = task_id_new()
        run = EvaluationRun.objects.create(
            evaluation_set=evaluation_set,
            created_by=user,
            task_id=task_id,
            settings_snapshot=_evaluation_snapshot(base),
        )
        task_enqueue(task=evaluate_retrieval, args=[run.id], user=user, task_id=task_id)
    return run, task_id


def _run_progress(run: EvaluationRun, progress: int) -> None:
    EvaluationRun.objects.filter(id=run.id).update(progress=progress)
    task_progress_set(task_id=run.task_id or None, progress=progress)


def _retrieved(hit: retrieval.Hit) -> dict:
    text = " ".join(hit.chunk.text.split())
    return {
        "document_id": hit.chunk.document_id,
        "document_title": hit.chunk.document.title,
        "chunk_id": hit.chunk.id,
        "snippet": text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "…",
    }


def _relevance(*, document_id: int | None, question: evaluation.Question):
    """Whether a hit answers the question: from the expected document, and containing the
    expected answer, whichever of the two the question gives (both: both must hold)."""

    def is_relevant(hit: retrieval.Hit) -> bool:
        if question.document and hit.chunk.document_id != document_id:
            return False
        return not question.answer or evaluation.contains_answer(hit.chunk.text, question.answer)

    return is_relevant


def _evaluate(run: EvaluationRun, base: KnowledgeBase) -> tuple[list, list]:
    """(figures per mode, results per question) of every question of the run's set."""
    questions = [evaluation.Question(**q) for q in run.evaluation_set.questions]
    documents = _DocumentIndex.of(base)
    shown = min(base.top_k, MISSES_SHOWN)
    ranks: dict[str, list[int | None]] = {mode: [] for mode in evaluation.MODES}
    latencies: dict[str, list[float]] = {mode: [] for mode in evaluation.MODES}
    results = []
    progress = 1
    for done, question in enumerate(questions, start=1):
        document_id = documents.resolve(question.document)[0] if question.document else None
        unfindable = bool(question.document) and document_id is None  # deleted since upload
        is_relevant = _relevance(document_id=document_id, question=question)
        # Untimed: embeds the question (the embedder keeps recent query vectors), so each
        # mode's latency below is its search alone, the same for all three.
        retrieval.search(
            knowledge_bases=[base], query=question.question, top_k=1, mode="vector",
            score_threshold=-1.0, use_cache=False,
        )  # fmt: skip
        row_ranks: dict[str, int | None] = {}
        retrieved: dict[str, list[dict]] = {}
        for mode in evaluation.MODES:
            started = time.perf_counter()
            hits = retrieval.search(
                knowledge_bases=[base], query=question.question, top_k=evaluation.DEPTH,
                score_threshold=base.score_threshold, mode=mode, use_cache=False,
            )  # fmt: skip
            latencies[mode].append(1000 * (time.perf_counter() - started))
            rank = None if unfindable else evaluation.first_relevant_rank(hits, is_relevant)
            ranks[mode].append(rank)
            row_ranks[mode] = rank
            if rank is None or rank > base.top_k:
                retrieved[mode] = [_retrieved(hit) for hit in hits[:shown]]
        results.append(
            EvaluationResult(
                run=run,
                row=question.row,
                question=question.question,
                expected_document=question.document,
                expected_document_id=document_id,
                expected_answer=question.answer,
                ranks=row_ranks,
                retrieved=retrieved,
                missed=bool(retrieved),
            )
        )
        now = 1 + 98 * done // len(questions)
        if now != progress:
            progress = now
            _run_progress(run, progress)
    metrics = [
        EvaluationModeMetrics(
            run=run,
            mode=mode,
            misses=sum(1 for result in results if mode in result.retrieved),
            **evaluation.summarise(ranks[mode], latencies[mode]),
        )
        for mode in evaluation.MODES
    ]
    return metrics, results


def _evaluation_failure_reason(exc: Exception) -> str:
    if isinstance(exc, ImproperlyConfigured):  # the base's model is not available here
        return str(exc)
    if isinstance(exc, LLMError):
        return _("The embedding model failed: %(error)s") % {"error": exc.message}
    if vector_store_unavailable(exc):
        return _("The vector store could not be reached: %(error)s") % {"error": exc}
    return _(
        "The evaluation failed because of an internal error; an administrator can see the logs."
    )


def evaluation_run_execute(*, run_id: int, task_id: str | None = None) -> str:
    """Body of `evaluate_retrieval`: run every question, then store the figures and results
    and mark the run completed; or mark it failed with a readable reason and raise
    EvaluationFailed with it. Idempotent: a finished run, or a task that is not the run's
    own, does nothing; an interrupted run starts over. Returns the run's status ("missing"
    if it was deleted)."""
    run = (
        EvaluationRun.objects.select_related("evaluation_set__knowledge_base")
        .filter(id=run_id)
        .first()
    )
    if run is None:
        return "missing"
    if task_id and run.task_id and run.task_id != task_id:
        return "superseded"
    if run.finished:
        return run.status
    base = run.evaluation_set.knowledge_base
    started_at, started = timezone.now(), time.perf_counter()
    EvaluationRun.objects.filter(id=run.id).update(
        status=EvaluationRun.Status.RUNNING,
        started_at=started_at,
        progress=1,
        error="",
        settings_snapshot=_evaluation_snapshot(base),
    )
    task_progress_set(task_id=run.task_id or None, progress=1)
    try:
        metrics, results = _evaluate(run, base)
    except Exception as exc:
        logger.exception("Evaluation run %s failed", run.id)
        reason = _evaluation_failure_reason(exc)
        evaluation_run_fail(run_id=run.id, reason=reason)
        raise EvaluationFailed(reason) from exc
    with transaction.atomic():
        current = EvaluationRun.objects.select_for_update().filter(id=run.id).first()
        if current is None:
            return "missing"
        if current.finished:
            return current.status  # a duplicate execution got here first
        EvaluationModeMetrics.objects.filter(run=current).delete()
        EvaluationResult.objects.filter(run=current).delete()
        EvaluationModeMetrics.objects.bulk_create(metrics)
        EvaluationResult.objects.bulk_create(results)
        EvaluationRun.objects.filter(id=run.id).update(
            status=EvaluationRun.Status.COMPLETED,
            progress=100,
            finished_at=timezone.now(),
            duration_seconds=round(time.perf_counter() - started, 3),
        )
    task_progress_set(task_id=run.task_id or None, progress=100)
    return EvaluationRun.Status.COMPLETED


def evaluation_run_fail(*, run_id: int, reason: str) -> str:
    """End an unfinished run as failed with `reason` (a finished one is left as it is)."""
    run = EvaluationRun.objects.filter(id=run_id).first()
    if run is None:
        return "missing"
    EvaluationRun.objects.filter(
        id=run_id, status__in=[EvaluationRun.Status.PENDING, EvaluationRun.Status.RUNNING]
    ).update(status=EvaluationRun.Status.FAILED, error=reason[:2000], finished_at=timezone.now())
    task_progress_set(task_id=run.task_id or None, progress=100)
    return EvaluationRun.Status.FAILED
