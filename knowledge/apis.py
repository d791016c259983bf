"""Knowledge base API (under /api/v1/knowledge/): thin views over selectors and services."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from openspark.core.body_limit import upload_body_limit
from openspark.core.errors import ApplicationError
from openspark.core.ids import IdField
from openspark.core.pagination import PageNumberPagination

from .models import Document, KnowledgeBase
from .selectors import (
    chunk_search,
    document_get_readable,
    document_get_writable,
    document_list,
    knowledge_base_get_readable,
    knowledge_base_get_writable,
    knowledge_base_list_readable,
)
from .services import (
    FileTooLarge,
    document_delete,
    document_reindex,
    documents_upload,
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
    @extend_schema(
        responses=KnowledgeBaseOutputSerializer(many=True), operation_id="knowledge_bases_list"
    )
    def get(self, request):
        bases = knowledge_base_list_readable(user=request.user).select_related("owner")
        paginator = PageNumberPagination()
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
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(documents, request, self)
        return paginator.get_paginated_response(DocumentOutputSerializer(page, many=True).data)

    @extend_schema(
        request={"multipart/form-data": UploadSerializer},
        responses={202: UploadedSerializer},
        operation_id="knowledge_documents_upload",
        description=(
            "Multipart, field `file` (repeat it for several files). 413 file_too_large, "
            "415 unsupported_file_type, 409 conflict when the same file is already in the base."
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
        request=InputSerializer, responses=OutputSerializer, operation_id="knowledge_search"
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
