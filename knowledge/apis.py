"""Knowledge base API (under /api/v1/knowledge/): thin views over selectors and services."""

from __future__ import annotations

import mimetypes

from django.contrib.auth import get_user_model
from django.http import FileResponse
from django.utils.translation import gettext as _
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from openspark.core.body_limit import upload_body_limit
from openspark.core.errors import ApplicationError
from openspark.core.ids import IdField
from openspark.core.pagination import PageNumberPagination
from openspark.core.schema import ErrorSerializer

from .models import Document, EvaluationResult, EvaluationRun, EvaluationSet, KnowledgeBase
from .selectors import (
    chunk_passage_get,
    chunk_search,
    document_file_open,
    document_get_readable,
    document_get_writable,
    document_list,
    evaluation_base_get,
    evaluation_metrics_by_mode,
    evaluation_run_get,
    evaluation_run_list,
    evaluation_run_misses,
    evaluation_set_get,
    evaluation_set_list,
    knowledge_base_get_readable,
    knowledge_base_get_writable,
    knowledge_base_list_readable,
)
from .services import (
    FileTooLarge,
    document_delete,
    document_reindex,
    documents_upload,
    evaluation_run_start,
    evaluation_set_create,
    evaluation_set_delete,
    knowledge_base_create,
    knowledge_base_delete,
    knowledge_base_update,
)

SNIPPET_CHARS = 300


class KnowledgeBaseOutputSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")
    is_owner = serializers.SerializerMethodField()
    document_count = serializers.SerializerMethodField()

    class Meta:
        model = KnowledgeBase
        fields = ["id", "name", "description", "visibility", "owner", "is_owner",
                  "embedding_model", "chunk_size", "chunk_overlap", "top_k", "score_threshold",
                  "document_count", "created_at", "updated_at"]  # fmt: skip

    def get_is_owner(self, base) -> bool:
        return base.owner_id == self.context["request"].user.id

    def get_document_count(self, base) -> int:
        return base.documents.count()


class DocumentOutputSerializer(serializers.ModelSerializer):
    knowledge_base_id = serializers.IntegerField()

    class Meta:
        model = Document
        fields = ["id", "knowledge_base_id", "title", "file_type", "size", "sha256", "status",
                  "progress", "chunk_count", "error", "task_id", "created_at", "updated_at",
                  "processing_started_at", "processed_at", "timings"]  # fmt: skip


def _users_by_username(usernames: list[str]):
    """The users a base can be shared with: active accounts. A name nobody has and a name
    whose account cannot be shared with get the same answer, so this tells no one which
    usernames exist; a share that succeeds confirms active users (sharing needs it), one
    request at a time within the `knowledge` endpoint group's limit."""
    users = list(get_user_model().objects.filter(username__in=usernames, is_active=True))
    refused = sorted(set(usernames) - {u.username for u in users})
    if refused:
        raise serializers.ValidationError(
            _("These users cannot be shared with: %(names)s") % {"names": ", ".join(refused)}
        )
    return users


class KnowledgeBaseInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    visibility = serializers.ChoiceField(
        choices=KnowledgeBase.Visibility.choices, required=False, default="private"
    )
    shared_with = serializers.ListField(
        child=serializers.CharField(max_length=150),
        required=False,
        help_text="Usernames that may read a `shared` base.",
    )
    chunk_size = serializers.IntegerField(required=False, min_value=100, max_value=4000)
    chunk_overlap = serializers.IntegerField(required=False, min_value=0, max_value=2000)
    top_k = serializers.IntegerField(required=False, min_value=1, max_value=50)
    score_threshold = serializers.FloatField(required=False, min_value=-1.0, max_value=1.0)

    def validate_shared_with(self, value):
        return _users_by_username(value)


class KnowledgeBaseListCreateApi(APIView):
    # The schema documents the page envelope and its query parameters from this.
    pagination_class = PageNumberPagination

    @extend_schema(
        responses=KnowledgeBaseOutputSerializer(many=True), operation_id="knowledge_bases_list"
    )
    def get(self, request):
        bases = knowledge_base_list_readable(user=request.user).select_related("owner")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(bases.order_by("-created_at", "-id"), request, self)
        data = KnowledgeBaseOutputSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        request=KnowledgeBaseInputSerializer,
        responses={201: KnowledgeBaseOutputSerializer},
        operation_id="knowledge_bases_create",
    )
    def post(self, request):
        serializer = KnowledgeBaseInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        base = knowledge_base_create(owner=request.user, **serializer.validated_data)
        data = KnowledgeBaseOutputSerializer(base, context={"request": request}).data
        return Response(data, status=status.HTTP_201_CREATED)


class KnowledgeBaseDetailApi(APIView):
    class UpdateSerializer(KnowledgeBaseInputSerializer):
        name = serializers.CharField(max_length=200, required=False)
        description = serializers.CharField(required=False, allow_blank=True)
        visibility = serializers.ChoiceField(
            choices=KnowledgeBase.Visibility.choices, required=False
        )

    class UpdatedSerializer(KnowledgeBaseOutputSerializer):
        reindex_task_id = serializers.CharField(allow_null=True)

        class Meta(KnowledgeBaseOutputSerializer.Meta):
            fields = [*KnowledgeBaseOutputSerializer.Meta.fields, "reindex_task_id"]

    @extend_schema(responses=KnowledgeBaseOutputSerializer, operation_id="knowledge_bases_get")
    def get(self, request, knowledge_base_id: int):
        base = knowledge_base_get_readable(user=request.user, knowledge_base_id=knowledge_base_id)
        return Response(KnowledgeBaseOutputSerializer(base, context={"request": request}).data)

    @extend_schema(
        request=UpdateSerializer,
        responses=UpdatedSerializer,
        operation_id="knowledge_bases_update",
        description="Changing chunk_size or chunk_overlap re-indexes every document.",
    )
    def patch(self, request, knowledge_base_id: int):
        base = knowledge_base_get_writable(user=request.user, knowledge_base_id=knowledge_base_id)
        serializer = self.UpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        shared_with = data.pop("shared_with", None)
        base, task_id = knowledge_base_update(
            knowledge_base=base, user=request.user, data=data, shared_with=shared_with
        )
        base.reindex_task_id = task_id
        return Response(self.UpdatedSerializer(base, context={"request": request}).data)

    @extend_schema(responses={204: None}, operation_id="knowledge_bases_delete")
    def delete(self, request, knowledge_base_id: int):
        base = knowledge_base_get_writable(user=request.user, knowledge_base_id=knowledge_base_id)
        knowledge_base_delete(knowledge_base=base)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DocumentListUploadApi(APIView):
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    # The schema documents the page envelope and its query parameters from this.
    pagination_class = PageNumberPagination

    class UploadSerializer(serializers.Serializer):
        file = serializers.ListField(child=serializers.FileField(), help_text="One or more files.")

    class UploadedSerializer(serializers.Serializer):
        documents = DocumentOutputSerializer(many=True)
        task_ids = serializers.ListField(child=serializers.CharField())

    @extend_schema(
        responses=DocumentOutputSerializer(many=True), operation_id="knowledge_documents_list"
    )
    def get(self, request, knowledge_base_id: int):
        documents = document_list(user=request.user, knowledge_base_id=knowledge_base_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(documents, request, self)
        return paginator.get_paginated_response(DocumentOutputSerializer(page, many=True).data)

    @extend_schema(
        request={"multipart/form-data": UploadSerializer},
        responses={
            202: UploadedSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="`conflict`: the same file is already in the base."
            ),
            507: OpenApiResponse(
                ErrorSerializer, description="No room left on the server's file storage."
            ),
        },
        operation_id="knowledge_documents_upload",
        description=(
            "Multipart, field `file` (repeat it for several files). 413 file_too_large, "
            "415 unsupported_file_type, 409 conflict when the same file is already in the base, "
            "507 insufficient_storage when the server's disk is full (nothing is stored)."
        ),
    )
    def post(self, request, knowledge_base_id: int):
        base = knowledge_base_get_writable(user=request.user, knowledge_base_id=knowledge_base_id)
        # Under ASGI the body limit (openspark/core/body_limit.py) refused this before Django
        # read the body; this is the same check for a WSGI deployment.
        limit = upload_body_limit()
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            raise FileTooLarge(
                _("The upload is larger than the limit."), details={"max_bytes": limit}
            )
        if not request.content_type.startswith("multipart/form-data"):
            raise ApplicationError(_("Upload files as multipart/form-data in the field `file`."))
        files = request.FILES.getlist("file")
        created = documents_upload(knowledge_base=base, user=request.user, files=files)
        data = {
            "documents": DocumentOutputSerializer([d for d, _t in created], many=True).data,
            "task_ids": [t for _d, t in created],
        }
        return Response(data, status=status.HTTP_202_ACCEPTED)


class DocumentDetailApi(APIView):
    @extend_schema(responses=DocumentOutputSerializer, operation_id="knowledge_documents_get")
    def get(self, request, document_id: int):
        document = document_get_readable(user=request.user, document_id=document_id)
        return Response(DocumentOutputSerializer(document).data)

    @extend_schema(responses={204: None}, operation_id="knowledge_documents_delete")
    def delete(self, request, document_id: int):
        document = document_get_writable(user=request.user, document_id=document_id)
        document_delete(document=document)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DocumentFileApi(APIView):
    """The uploaded original, streamed from the default storage (a download, never shown
    inline: an uploaded HTML file must not run on our origin)."""

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(description="The file."),
            404: OpenApiResponse(ErrorSerializer, description="Unknown, or not readable."),
        },
        operation_id="knowledge_documents_file",
    )
    def get(self, request, document_id: int):
        document, handle = document_file_open(user=request.user, document_id=document_id)
        content_type, _encoding = mimetypes.guess_type(document.title)
        # FileResponse closes the handle when the response is closed.
        return FileResponse(
            handle,
            as_attachment=True,
            filename=document.title,
            content_type=content_type or "application/octet-stream",
        )


class PassageSerializer(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    ordinal = serializers.IntegerField()
    text = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    section = serializers.CharField(allow_blank=True)


class ChunkPassageApi(APIView):
    """A cited passage with its neighbours, for the citation view (`chunk_id` of a citation)."""

    class OutputSerializer(PassageSerializer):
        document_id = serializers.IntegerField()
        document_title = serializers.CharField()
        knowledge_base_id = serializers.IntegerField()
        before = PassageSerializer(many=True)
        after = PassageSerializer(many=True)

    @extend_schema(
        responses={
            200: OutputSerializer,
            401: ErrorSerializer,
            404: OpenApiResponse(ErrorSerializer, description="Unknown, or not readable."),
        },
        operation_id="knowledge_chunks_get",
    )
    def get(self, request, chunk_id: int):
        passage = chunk_passage_get(user=request.user, chunk_id=chunk_id)
        return Response(self.OutputSerializer(passage).data)


class DocumentReindexApi(APIView):
    class OutputSerializer(serializers.Serializer):
        document = DocumentOutputSerializer()
        task_id = serializers.CharField()

    @extend_schema(
        request=None,
        responses={202: OutputSerializer},
        operation_id="knowledge_documents_reindex",
        description="Re-chunk and re-embed; also the way to retry a failed document.",
    )
    def post(self, request, document_id: int):
        document = document_get_writable(user=request.user, document_id=document_id)
        task_id = document_reindex(document=document, user=request.user)
        data = {"document": DocumentOutputSerializer(document).data, "task_id": task_id}
        return Response(data, status=status.HTTP_202_ACCEPTED)


class KnowledgeSearchApi(APIView):
    class InputSerializer(serializers.Serializer):
        query = serializers.CharField(max_length=2000)
        knowledge_base_ids = serializers.ListField(child=IdField(), required=False, max_length=50)
        top_k = serializers.IntegerField(required=False, min_value=1, max_value=50)
        score_threshold = serializers.FloatField(required=False, min_value=-1.0, max_value=1.0)
        mode = serializers.ChoiceField(
            choices=["hybrid", "vector", "keyword"], required=False, default="hybrid"
        )

    class HitSerializer(serializers.Serializer):
        chunk_id = serializers.IntegerField(source="chunk.id")
        ordinal = serializers.IntegerField(source="chunk.ordinal")
        document_id = serializers.IntegerField(source="chunk.document_id")
        document_title = serializers.CharField(source="chunk.document.title")
        knowledge_base_id = serializers.IntegerField(source="chunk.knowledge_base_id")
        page = serializers.IntegerField(source="chunk.page", allow_null=True)
        section = serializers.CharField(source="chunk.section")
        snippet = serializers.SerializerMethodField()
        score = serializers.FloatField(help_text="Fused relevance, 1.0 = top of every ranking.")
        vector_score = serializers.FloatField(allow_null=True, help_text="Cosine similarity.")
        keyword_score = serializers.FloatField(allow_null=True, help_text="BM25 (rank only).")

        def get_snippet(self, hit) -> str:
            text = hit.chunk.text
            return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS] + "…"

    class OutputSerializer(serializers.Serializer):
        query = serializers.CharField()
        results = serializers.ListField(child=serializers.DictField())

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            503: OpenApiResponse(
                ErrorSerializer, description="The search index (Milvus) cannot be reached."
            ),
        },
        operation_id="knowledge_search",
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        params = serializer.validated_data
        hits = chunk_search(
            user=request.user,
            query=params["query"],
            knowledge_base_ids=params.get("knowledge_base_ids"),
            top_k=params.get("top_k"),
            score_threshold=params.get("score_threshold"),
            mode=params["mode"],
        )
        results = [
            {"rank": rank, **self.HitSerializer(hit).data} for rank, hit in enumerate(hits, start=1)
        ]
        return Response({"query": params["query"], "results": results})


# --- retrieval evaluation (staff) --------------------------------------------------------------


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


def _page_of(serializer_class, *, name: str) -> serializers.Serializer:
    """The paginated envelope of a list (PageNumberPagination), for the schema."""
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )


STAFF_ERRORS = {
    401: _error("`not_authenticated`."),
    403: _error("`permission_denied`: only staff evaluate retrieval."),
    404: _error("`not_found`: no knowledge base with this id, or no such set or run in it."),
}


class EvaluationSetOutputSerializer(serializers.ModelSerializer):
    knowledge_base_id = serializers.IntegerField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True)

    class Meta:
        model = EvaluationSet
        fields = ["id", "knowledge_base_id", "name", "filename", "file_type", "question_count",
                  "created_by", "created_at"]  # fmt: skip


class EvaluationQuestionSerializer(serializers.Serializer):
    row = serializers.IntegerField(help_text="CSV: record number, the header being 1; JSONL: line.")
    question = serializers.CharField()
    document = serializers.CharField(help_text="Expected document as written (id or title).")
    answer = serializers.CharField(help_text="Expected answer string; empty when not given.")


class EvaluationModeMetricsSerializer(serializers.Serializer):
    recall_at_1 = serializers.FloatField()
    recall_at_5 = serializers.FloatField()
    recall_at_10 = serializers.FloatField()
    mrr = serializers.FloatField(help_text="Mean reciprocal rank over the first 10 passages.")
    latency_p50_ms = serializers.FloatField()
    latency_p95_ms = serializers.FloatField()
    misses = serializers.IntegerField(help_text="Questions not answered within the base's top_k.")


class EvaluationMetricsSerializer(serializers.Serializer):
    hybrid = EvaluationModeMetricsSerializer(allow_null=True)
    vector = EvaluationModeMetricsSerializer(allow_null=True)
    keyword = EvaluationModeMetricsSerializer(allow_null=True)


class EvaluationSettingsSerializer(serializers.Serializer):
    chunk_size = serializers.IntegerField()
    chunk_overlap = serializers.IntegerField()
    embedding_model = serializers.CharField()
    top_k = serializers.IntegerField()
    score_threshold = serializers.FloatField()
    documents = serializers.IntegerField(help_text="Ready documents when the run started.")
    chunks = serializers.IntegerField()
    depth = serializers.IntegerField(help_text="Passages retrieved per question and mode.")


class EvaluationRunOutputSerializer(serializers.ModelSerializer):
    evaluation_set_id = serializers.IntegerField()
    evaluation_set_name = serializers.CharField(source="evaluation_set.name")
    settings = EvaluationSettingsSerializer(source="settings_snapshot")
    metrics = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", allow_null=True)

    class Meta:
        model = EvaluationRun
        fields = ["id", "evaluation_set_id", "evaluation_set_name", "status", "progress", "error",
                  "task_id", "settings", "metrics", "created_by", "created_at", "started_at",
                  "finished_at", "duration_seconds"]  # fmt: skip

    @extend_schema_field(EvaluationMetricsSerializer)
    def get_metrics(self, run) -> dict:
        by_mode = evaluation_metrics_by_mode(run=run)
        return {
            mode: EvaluationModeMetricsSerializer(metrics).data if metrics else None
            for mode, metrics in by_mode.items()
        }


class EvaluationRetrievedSerializer(serializers.Serializer):
    document_id = serializers.IntegerField()
    document_title = serializers.CharField()
    chunk_id = serializers.IntegerField()
    snippet = serializers.CharField()


class EvaluationRanksSerializer(serializers.Serializer):
    hybrid = serializers.IntegerField(allow_null=True)
    vector = serializers.IntegerField(allow_null=True)
    keyword = serializers.IntegerField(allow_null=True)


class EvaluationRetrievedByModeSerializer(serializers.Serializer):
    hybrid = EvaluationRetrievedSerializer(many=True, required=False)
    vector = EvaluationRetrievedSerializer(many=True, required=False)
    keyword = EvaluationRetrievedSerializer(many=True, required=False)


class EvaluationMissSerializer(serializers.ModelSerializer):
    ranks = EvaluationRanksSerializer(
        help_text="Rank of the first relevant passage per mode; null: not in the first 10."
    )
    retrieved = EvaluationRetrievedByModeSerializer(
        help_text="Per mode that missed (not within top_k): the passages retrieved instead."
    )

    class Meta:
        model = EvaluationResult
        fields = ["row", "question", "expected_document", "expected_document_id",
                  "expected_answer", "ranks", "retrieved"]  # fmt: skip


class EvaluationSetListUploadApi(APIView):
    permission_classes = [IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]

    class UploadSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="A .csv or .jsonl question file, UTF-8.")
        name = serializers.CharField(max_length=200, required=False, allow_blank=True)

    @extend_schema(
        responses={
            200: _page_of(EvaluationSetOutputSerializer, name="EvaluationSetPage"),
            **STAFF_ERRORS,
        },
        operation_id="knowledge_evaluation_sets_list",
    )
    def get(self, request, knowledge_base_id: int):
        base = evaluation_base_get(user=request.user, knowledge_base_id=knowledge_base_id)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(evaluation_set_list(knowledge_base=base), request, self)
        return paginator.get_paginated_response(EvaluationSetOutputSerializer(page, many=True).data)

    @extend_schema(
        request={"multipart/form-data": UploadSerializer},
        responses={
            201: EvaluationSetOutputSerializer,
            400: _error(
                "`validation_error`: the file cannot be read, or rows are wrong — "
                "`details.errors` lists them [{row, message}] (`details.error_count` in all)."
            ),
            413: _error("`file_too_large`: past KNOWLEDGE_EVAL_MAX_UPLOAD_BYTES."),
            415: _error("`unsupported_file_type`: not .csv or .jsonl."),
            **STAFF_ERRORS,
        },
        operation_id="knowledge_evaluation_sets_upload",
        description="Multipart: `file` (CSV with a header row, or JSON Lines) and an optional "
        "`name`. Columns/keys: `question`, and `document` (id or title) and/or `answer`.",
    )
    def post(self, request, knowledge_base_id: int):
        base = evaluation_base_get(user=request.user, knowledge_base_id=knowledge_base_id)
        serializer = self.UploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = evaluation_set_create(
            knowledge_base=base,
            user=request.user,
            upload=serializer.validated_data["file"],
            name=serializer.validated_data.get("name", ""),
        )
        return Response(EvaluationSetOutputSerializer(created).data, status=status.HTTP_201_CREATED)


class EvaluationSetDetailApi(APIView):
    permission_classes = [IsAdminUser]

    class OutputSerializer(EvaluationSetOutputSerializer):
        questions = EvaluationQuestionSerializer(many=True)

        class Meta(EvaluationSetOutputSerializer.Meta):
            fields = [*EvaluationSetOutputSerializer.Meta.fields, "questions"]

    @extend_schema(
        responses={200: OutputSerializer, **STAFF_ERRORS},
        operation_id="knowledge_evaluation_sets_get",
    )
    def get(self, request, knowledge_base_id: int, evaluation_set_id: int):
        base = evaluation_base_get(user=request.user, knowledge_base_id=knowledge_base_id)
        found = evaluation_set_get(knowledge_base=base, evaluation_set_id=evaluation_set_id)
        return Response(self.OutputSerializer(found).data)

    @extend_schema(
        responses={204: None, **STAFF_ERRORS},
        operation_id="knowledge_evaluation_sets_delete",
        description="Deletes the set and all its runs.",
    )
    def delete(self, request, knowledge_base_id: int, evaluation_set_id: int):
        base = evaluation_base_get(user=request.user, knowledge_base_id=knowledge_base_id)
        found = evaluation_set_get(knowledge_base=base, evaluation_set_id=evaluation_set_id)
        evaluation_set_delete(evaluation_set=found)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EvaluationRunListStartApi(APIView):
    permission_classes = [IsAdminUser]

    class FilterSerializer(serializers.Serializer):
        evaluation_set_id = IdField(required=False, help_text="Only this set's runs.")

    class StartSerializer(serializers.Serializer):
        evaluation_set_id = IdField()

    class StartedSerializer(serializers.Serializer):
        run = EvaluationRunOutputSerializer()
        task_id = serializers.CharField(help_text="Follow it at GET /api/v1/tasks/{task_id}/.")

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: _page_of(EvaluationRunOutputSerializer, name="EvaluationRunPage"),
            400: _error("`validation_error`: `evaluation_set_id` is not an id."),
            **STAFF_ERRORS,
        },
        operation_id="knowledge_evaluation_runs_list",
    )
    def get(self, request, knowledge_base_id: int):
        base = evaluation_base_get(user=request.user, knowledge_base_id=knowledge_base_id)
        params = self.FilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        runs = evaluation_run_list(
            knowledge_base=base, evaluation_set_id=params.validated_data.get("evaluation_set_id")
        )
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(runs, request, self)
        return paginator.get_paginated_response(EvaluationRunOutputSerializer(page, many=True).data)

    @extend_schema(
        request=StartSerializer,
        responses={
            202: StartedSerializer,
            400: _error("`validation_error`: `evaluation_set_id` missing or not an id."),
            409: _error(
                "`conflict`: documents of the base are still being processed, it has none "
                "ready, or a run of this set is already in progress (`details.run_id`)."
            ),
            **STAFF_ERRORS,
        },
        operation_id="knowledge_evaluation_runs_start",
        description="Runs every question of the set in hybrid, vector and keyword mode in the "
        "background (default queue).",
    )
    def post(self, request, knowledge_base_id: int):
        base = evaluation_base_get(user=request.user, knowledge_base_id=knowledge_base_id)
        serializer = self.StartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        found = evaluation_set_get(
            knowledge_base=base, evaluation_set_id=serializer.validated_data["evaluation_set_id"]
        )
        run, task_id = evaluation_run_start(evaluation_set=found, user=request.user)
        data = {"run": EvaluationRunOutputSerializer(run).data, "task_id": task_id}
        return Response(data, status=status.HTTP_202_ACCEPTED)


class EvaluationRunDetailApi(APIView):
    permission_classes = [IsAdminUser]

    class OutputSerializer(EvaluationRunOutputSerializer):
        question_count = serializers.IntegerField(source="evaluation_set.question_count")
        misses = serializers.SerializerMethodField()

        class Meta(EvaluationRunOutputSerializer.Meta):
            fields = [*EvaluationRunOutputSerializer.Meta.fields, "question_count", "misses"]

        @extend_schema_field(EvaluationMissSerializer(many=True))
        def get_misses(self, run) -> list:
            return EvaluationMissSerializer(evaluation_run_misses(run=run), many=True).data

    @extend_schema(
        responses={200: OutputSerializer, **STAFF_ERRORS},
        operation_id="knowledge_evaluation_runs_get",
        description="Status and progress; once completed, the figures per mode and every "
        "question missed in at least one mode, with what was retrieved instead.",
    )
    def get(self, request, knowledge_base_id: int, run_id: int):
        base = evaluation_base_get(user=request.user, knowledge_base_id=knowledge_base_id)
        run = evaluation_run_get(knowledge_base=base, run_id=run_id)
        return Response(self.OutputSerializer(run).data)
