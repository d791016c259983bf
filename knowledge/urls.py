"""knowledge API routes (under /api/v1/knowledge/)."""

from django.urls import path

from . import apis

urlpatterns = [
    path("bases/", apis.KnowledgeBaseListCreateApi.as_view(), name="knowledge-bases"),
    path(
        "bases/<id:knowledge_base_id>/",
        apis.KnowledgeBaseDetailApi.as_view(),
        name="knowledge-base-detail",
    ),
    path(
        "bases/<id:knowledge_base_id>/documents/",
        apis.DocumentListUploadApi.as_view(),
        name="knowledge-documents",
    ),
    path(
        "documents/<id:document_id>/",
        apis.DocumentDetailApi.as_view(),
        name="knowledge-document-detail",
    ),
    path(
        "documents/<id:document_id>/file",
        apis.DocumentFileApi.as_view(),
        name="knowledge-document-file",
    ),
    path(
        "documents/<id:document_id>/reindex",
        apis.DocumentReindexApi.as_view(),
        name="knowledge-document-reindex",
    ),
    path("search", apis.KnowledgeSearchApi.as_view(), name="knowledge-search"),
    path("chunks/<id:chunk_id>/", apis.ChunkPassageApi.as_view(), name="knowledge-chunk-detail"),
    path(
        "bases/<id:knowledge_base_id>/evaluations/sets/",
        apis.EvaluationSetListUploadApi.as_view(),
        name="knowledge-evaluation-sets",
    ),
    path(
        "bases/<id:knowledge_base_id>/evaluations/sets/<id:evaluation_set_id>/",
        apis.EvaluationSetDetailApi.as_view(),
        name="knowledge-evaluation-set-detail",
    ),
    path(
        "bases/<id:knowledge_base_id>/evaluations/runs/",
        apis.EvaluationRunListStartApi.as_view(),
        name="knowledge-evaluation-runs",
    ),
    path(
        "bases/<id:knowledge_base_id>/evaluations/runs/<id:run_id>/",
        apis.EvaluationRunDetailApi.as_view(),
        name="knowledge-evaluation-run-detail",
    ),
]
