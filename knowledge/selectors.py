"""Permission-checked reads for knowledge bases: the only way views and other apps reach them."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.files import File
from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.utils.translation import gettext as _

from openspark.core.errors import ApplicationError, DependencyUnavailable, NotFound
from openspark.llm.base import Passage, estimate_tokens
from throttling.selectors import plan_for_user

from . import cache as knowledge_cache
from . import evaluation, retrieval, vectorstore
from .models import (
    Chunk,
    Document,
    EvaluationModeMetrics,
    EvaluationResult,
    EvaluationRun,
    EvaluationSet,
    KnowledgeBase,
)


def knowledge_base_list_readable(*, user) -> QuerySet[KnowledgeBase]:
    """Bases the user may read: own, shared with them, or public. Staff read everything."""
    qs = KnowledgeBase.objects.all()
    if user.is_staff:
        return qs
    return qs.filter(
        Q(owner=user)
        | Q(visibility=KnowledgeBase.Visibility.PUBLIC)
        | Q(visibility=KnowledgeBase.Visibility.SHARED, shared_with=user)
    ).distinct()


@dataclass(frozen=True, slots=True)
class KnowledgeUsage:
    """What a user's own bases hold, as the plan's storage quotas count it: every document
    whatever its status (a failed one still keeps its file)."""

    storage_bytes: int
    documents: int
    knowledge_bases: int


def knowledge_usage_get(*, owner_id: int) -> KnowledgeUsage:
    documents = Document.objects.filter(knowledge_base__owner_id=owner_id).aggregate(
        count=Count("id"), size=Sum("size")
    )
    return KnowledgeUsage(
        storage_bytes=documents["size"] or 0,
        documents=documents["count"],
        knowledge_bases=KnowledgeBase.objects.filter(owner_id=owner_id).count(),
    )


def knowledge_quota_status_get(*, user) -> dict[str, dict[str, int]]:
    """Per quota kind: `used` and `limit` (0 = unlimited), for GET me/ and the account page."""
    plan = plan_for_user(user)
    usage = knowledge_usage_get(owner_id=user.id)
    return {
        "storage_bytes": {"used": usage.storage_bytes, "limit": plan.storage_quota_bytes},
        "documents": {"used": usage.documents, "limit": plan.document_quota},
        "knowledge_bases": {"used": usage.knowledge_bases, "limit": plan.knowledge_base_quota},
    }


def knowledge_base_get_readable(*, user, knowledge_base_id: int) -> KnowledgeBase:
    base = knowledge_base_list_readable(user=user).filter(id=knowledge_base_id).first()
    if base is None:
        raise NotFound("No knowledge base with this id.")
    return base


def knowledge_base_ids_readable(*, user, requested_ids: list[int]) -> list[int]:
    """The subset of requested ids the user may read; unreadable ids are a 404, never a leak."""
    requested = set(requested_ids)
    readable = set(
        knowledge_base_list_readable(user=user)
        .filter(id__in=requested)
        .values_list("id", flat=True)
    )
    if missing := requested - readable:
        raise NotFound(
            "No knowledge base with this id.", details={"knowledge_base_ids": sorted(missing)}
        )
    return sorted(readable)


def knowledge_base_get_writable(*, user, knowledge_base_id: int) -> KnowledgeBase:
    """Owner (or staff) only; a base the user may read but not change is a 403, one they may
    not read a 404."""
    base = knowledge_base_get_readable(user=user, knowledge_base_id=knowledge_base_id)
    if not (user.is_staff or base.owner_id == user.id):
        raise ApplicationError(
            _("Only the owner can change this knowledge base."),
            code="permission_denied",
            status_code=403,
        )
    return base


def document_list(*, user, knowledge_base_id: int) -> QuerySet[Document]:
    base = knowledge_base_get_readable(user=user, knowledge_base_id=knowledge_base_id)
    return base.documents.order_by("-created_at", "-id")


def document_get_readable(*, user, document_id: int) -> Document:
    document = (
        Document.objects.select_related("knowledge_base")
        .filter(id=document_id, knowledge_base__in=knowledge_base_list_readable(user=user))
        .first()
    )
    if document is None:
        raise NotFound(_("No document with this id."))
    return document


def document_file_open(*, user, document_id: int) -> tuple[Document, File]:
    """The uploaded original, open for reading, through the default storage (local files or
    an S3 bucket: any web process on any machine reads any upload). The caller closes it."""
    document = document_get_readable(user=user, document_id=document_id)
    if not document.file:
        raise NotFound(_("This document has no stored file."))
    try:
        return document, document.file.open("rb")
    except FileNotFoundError:  # the storage lost it (a restore without the files)
        raise NotFound(_("This document's file is missing from storage.")) from None


def document_get_writable(*, user, document_id: int) -> Document:
    document = document_get_readable(user=user, document_id=document_id)
    if not (user.is_staff or document.knowledge_base.owner_id == user.id):
        raise ApplicationError(
            _("Only the owner can change this knowledge base."),
            code="permission_denied",
            status_code=403,
        )
    return document


def _bases_for_query(*, user, knowledge_base_ids: list[int] | None) -> list[KnowledgeBase]:
    if knowledge_base_ids is None:
        return list(knowledge_base_list_readable(user=user))
    ids = knowledge_base_ids_readable(user=user, requested_ids=knowledge_base_ids)
    return list(KnowledgeBase.objects.filter(id__in=ids))


VECTOR_STORE_RETRY_AFTER = "10"


def chunk_search(
    *,
    user,
    query: str,
    knowledge_base_ids: list[int] | None = None,
    top_k: int | None = None,
    score_threshold: float | None = None,
    mode: retrieval.Mode = "hybrid",
) -> list[retrieval.Hit]:
    """Ranked chunks from the bases the user may read (all of them when no ids are given);
    unreadable ids are a 404. Defaults come from the bases' own settings."""
    bases = _bases_for_query(user=user, knowledge_base_ids=knowledge_base_ids)
    if not bases:
        return []
    try:
        return retrieval.search(
            knowledge_bases=bases,
            query=query,
            top_k=top_k or max(b.top_k for b in bases),
            score_threshold=(
                score_threshold
                if score_threshold is not None
                else min(b.score_threshold for b in bases)
            ),
            mode=mode,
        )
    except Exception as exc:
        if not vectorstore.is_unavailable(exc):
            raise
        raise DependencyUnavailable(
            _("The search index is unavailable right now; try again shortly."),
            headers={"Retry-After": VECTOR_STORE_RETRY_AFTER},
        ) from exc


def passages_for_query(
    *, user, knowledge_base_ids: list[int], query: str, top_k: int | None = None
) -> list[Passage]:
    """The chat hook: sources for the prompt, numbered 1..n in rank order, trimmed so that
    together they fit settings.KNOWLEDGE_CONTEXT_TOKEN_BUDGET. Bases the user may not read
    are a NotFound, never silently skipped (the caller asked for them by id)."""
    if not knowledge_base_ids:
        return []
    ids = knowledge_base_ids_readable(user=user, requested_ids=knowledge_base_ids)
    return passages_for_bases(knowledge_base_ids=ids, query=query, top_k=top_k)


def passages_for_bases(
    *,
    knowledge_base_ids: list[int],
    query: str,
    top_k: int | None = None,
    score_threshold: float | None = None,
) -> list[Passage]:
    """`passages_for_query` for bases the caller has already authorised (an assistant lends
    its bases to the people it serves: `assistants.selectors`); never call it with ids a
    request named. Bases that no longer exist are skipped. `score_threshold`: instead of the
    bases' own (the lowest of them)."""
    bases = list(KnowledgeBase.objects.filter(id__in=knowledge_base_ids))
    if not bases:
        return []
    hits = retrieval.search(
        knowledge_bases=bases,
        query=query,
        top_k=top_k or max(b.top_k for b in bases),
        score_threshold=(
            score_threshold
            if score_threshold is not None
            else min(b.score_threshold for b in bases)
        ),
        mode="hybrid",
    )
    budget = settings.KNOWLEDGE_CONTEXT_TOKEN_BUDGET
    passages: list[Passage] = []
    for hit in hits:
        text = hit.chunk.text
        tokens = estimate_tokens(text)
        if tokens > budget:
            text = _trim_to_tokens(text, budget - 1)
            tokens = estimate_tokens(text)
        if not text or tokens > budget:
            break
        budget -= tokens
        passages.append(
            Passage(
                index=len(passages) + 1,
                document_id=hit.chunk.document_id,
                document_title=hit.chunk.document.title,
                chunk_id=hit.chunk.id,
                text=text,
                score=hit.score,
            )
        )
        if budget <= MIN_PASSAGE_TOKENS:
            break
    return passages


MIN_PASSAGE_TOKENS = 32


def _trim_to_tokens(text: str, budget: int) -> str:
    """The longest prefix within `budget` tokens (binary search: estimate is monotonic)."""
    if budget < MIN_PASSAGE_TOKENS:
        return ""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if estimate_tokens(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + "…"


def document_error_get(*, document_id: int) -> str:
    """Why a document failed (for its task's state), empty if it did not."""
    return Document.objects.filter(id=document_id).values_list("error", flat=True).first() or ""


# --- retrieval evaluation (staff only) ---------------------------------------------------------


def evaluation_base_get(*, user, knowledge_base_id: int) -> KnowledgeBase:
    """A base to evaluate: staff only (403 for anyone else, whatever they may read), 404 for
    an unknown id."""
    if not user.is_staff:
        raise ApplicationError(
            _("Only staff can evaluate retrieval."), code="permission_denied", status_code=403
        )
    base = KnowledgeBase.objects.filter(id=knowledge_base_id).first()
    if base is None:
        raise NotFound(_("No knowledge base with this id."))
    return base


def evaluation_set_list(*, knowledge_base: KnowledgeBase) -> QuerySet[EvaluationSet]:
    return knowledge_base.evaluation_sets.select_related("created_by").order_by(
        "-created_at", "-id"
    )


def evaluation_set_get(*, knowledge_base: KnowledgeBase, evaluation_set_id: int) -> EvaluationSet:
    found = evaluation_set_list(knowledge_base=knowledge_base).filter(id=evaluation_set_id).first()
    if found is None:
        raise NotFound(_("No evaluation set with this id in this knowledge base."))
    return found


def evaluation_run_list(
    *, knowledge_base: KnowledgeBase, evaluation_set_id: int | None = None
) -> QuerySet[EvaluationRun]:
    """Newest first, with their sets and figures."""
    runs = EvaluationRun.objects.filter(evaluation_set__knowledge_base=knowledge_base)
    if evaluation_set_id is not None:
        runs = runs.filter(evaluation_set_id=evaluation_set_id)
    return (
        runs.select_related("evaluation_set", "created_by")
        .prefetch_related(Prefetch("metrics", queryset=EvaluationModeMetrics.objects.all()))
        .order_by("-created_at", "-id")
    )


def evaluation_run_get(*, knowledge_base: KnowledgeBase, run_id: int) -> EvaluationRun:
    run = evaluation_run_list(knowledge_base=knowledge_base).filter(id=run_id).first()
    if run is None:
        raise NotFound(_("No evaluation run with this id in this knowledge base."))
    return run


def evaluation_run_misses(*, run: EvaluationRun) -> QuerySet[EvaluationResult]:
    """The questions a run missed in at least one mode, in file order."""
    return run.results.filter(missed=True).order_by("row")


def evaluation_metrics_by_mode(*, run: EvaluationRun) -> dict[str, EvaluationModeMetrics | None]:
    """{hybrid, vector, keyword} → the run's figures (None until it completed)."""
    found = {metrics.mode: metrics for metrics in run.metrics.all()}
    return {mode: found.get(mode) for mode in evaluation.MODES}


HISTORY_RUNS = 30


def evaluation_history(*, evaluation_set: EvaluationSet) -> list[dict]:
    """The set's last completed runs, oldest first, with the settings they ran under: the
    admin's history chart."""
    runs = list(
        evaluation_run_list(
            knowledge_base=evaluation_set.knowledge_base, evaluation_set_id=evaluation_set.id
        ).filter(status=EvaluationRun.Status.COMPLETED)[:HISTORY_RUNS]
    )
    history = []
    for run in reversed(runs):
        snapshot = run.settings_snapshot
        history.append(
            {
                "id": run.id,
                "created_at": run.created_at.isoformat(),
                "chunk_size": snapshot.get("chunk_size"),
                "chunk_overlap": snapshot.get("chunk_overlap"),
                "embedding_model": snapshot.get("embedding_model"),
                "metrics": {
                    metrics.mode: {
                        "recall_at_1": metrics.recall_at_1,
                        "recall_at_5": metrics.recall_at_5,
                        "recall_at_10": metrics.recall_at_10,
                        "mrr": metrics.mrr,
                    }
                    for metrics in run.metrics.all()
                },
            }
        )
    return history


# --- passages (the citation view) -------------------------------------------------------------


def _passage(chunk: Chunk) -> dict:
    return {
        "chunk_id": chunk.id,
        "ordinal": chunk.ordinal,
        "text": chunk.text,
        "page": chunk.page,
        "section": chunk.section,
    }


def document_passages(*, document: Document) -> list[dict]:
    """A document's passages in order (chunk id, ordinal, text, page, section), from the
    `document_content` cache (invalidated with the document's base)."""

    def compute() -> list[dict]:
        chunks = document.chunks.order_by("ordinal").only(
            "id", "ordinal", "text", "page", "section"
        )
        return [_passage(chunk) for chunk in chunks]

    return knowledge_cache.document_content_get(
        document_id=document.id, kb_id=document.knowledge_base_id, compute=compute
    )


def chunk_passage_get(*, user, chunk_id: int, context: int = 1) -> dict:
    """A cited passage with `context` passages before and after it, from a base the user may
    read (another base's chunk is a 404, as an unknown one)."""
    chunk = (
        Chunk.objects.filter(
            id=chunk_id, knowledge_base__in=knowledge_base_list_readable(user=user)
        )
        .select_related("document")
        .first()
    )
    if chunk is None:
        raise NotFound(_("No passage with this id."))
    passages = document_passages(document=chunk.document)
    at = next((n for n, p in enumerate(passages) if p["chunk_id"] == chunk.id), None)
    if at is None:  # re-chunked between the two reads: the row is the truth, alone
        passages, at = [_passage(chunk)], 0
    return {
        **passages[at],
        "document_id": chunk.document_id,
        "document_title": chunk.document.title,
        "knowledge_base_id": chunk.knowledge_base_id,
        "before": passages[max(0, at - context) : at],
        "after": passages[at + 1 : at + 1 + context],
    }


def document_content_warm(*, document_ids: list[int]) -> int:
    """Warm-up hook (settings.CACHE_DOCUMENT_WARMERS): the most read documents' passages."""
    documents = Document.objects.filter(id__in=document_ids, status=Document.Status.READY)
    for document in documents:
        document_passages(document=document)
    return len(documents)
