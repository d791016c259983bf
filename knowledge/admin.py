"""Staff tools: multi-file upload into a base, documents with live status and progress,
re-index / retry / delete actions (through the services, so vectors follow), a retrieval
test page that shows the ranked chunks and their scores for a query, and an evaluation page
per base (question sets, runs with their report, the history of runs as a chart)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from openspark.core.errors import ApplicationError
from openspark.core.pages import js_strings

from .evaluation import MODES
from .models import Chunk, Document, EvaluationModeMetrics, KnowledgeBase
from .selectors import (
    chunk_search,
    evaluation_history,
    evaluation_metrics_by_mode,
    evaluation_run_list,
    evaluation_run_misses,
    evaluation_set_list,
)
from .services import (
    document_delete,
    document_reindex,
    documents_upload,
    evaluation_run_start,
    evaluation_set_create,
    evaluation_set_delete,
    knowledge_base_delete,
    knowledge_base_reindex,
)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)]


class UploadForm(forms.Form):
    files = MultipleFileField(label=_("Files"), help_text=_("PDF, DOCX, Markdown, HTML, TXT, CSV."))


class RetrievalTestForm(forms.Form):
    query = forms.CharField(label=_("Query"), max_length=2000)
    knowledge_bases = forms.ModelMultipleChoiceField(
        label=_("Knowledge bases"),
        queryset=KnowledgeBase.objects.all(),
        required=False,
        help_text=_("None selected: every base."),
    )
    top_k = forms.IntegerField(label=_("Top k"), min_value=1, max_value=50, initial=5)
    score_threshold = forms.FloatField(
        label=_("Score threshold"), min_value=-1, max_value=1, required=False
    )
    mode = forms.ChoiceField(
        label=_("Mode"),
        choices=[
            ("hybrid", _("Hybrid")),
            ("vector", _("Vector only")),
            ("keyword", _("Keyword only")),
        ],
    )


class EvaluationSetForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200, required=False)
    file = forms.FileField(
        label=_("Question file"),
        help_text=_(
            "CSV with a header row (question, document and/or answer) or JSON Lines; UTF-8."
        ),
    )


EVALUATION_JS_STRINGS = {
    "title": _("Runs of this set over time"),
    "mrr": _("MRR"),
    "recall5": _("Recall@5"),
    "hybrid": _("Hybrid"),
    "vector": _("Vector"),
    "keyword": _("Keyword"),
    "chunk": _("chunks %(size)s/%(overlap)s"),
    "noData": _("No completed run yet."),
}

# The report's rows: (label, field, format) per figure, the modes side by side.
REPORT_ROWS = [
    (_("Recall@1"), "recall_at_1", "{:.3f}"),
    (_("Recall@5"), "recall_at_5", "{:.3f}"),
    (_("Recall@10"), "recall_at_10", "{:.3f}"),
    (_("MRR"), "mrr", "{:.3f}"),
    (_("Latency p50 (ms)"), "latency_p50_ms", "{:.1f}"),
    (_("Latency p95 (ms)"), "latency_p95_ms", "{:.1f}"),
    (_("Missed (not within top k)"), "misses", "{}"),
]
MISSES_SHOWN = 200


def _report_rows(by_mode: dict) -> list[tuple[str, list[str]]]:
    return [
        (label, [fmt.format(getattr(by_mode[m], field)) if by_mode[m] else "-" for m in MODES])
        for label, field, fmt in REPORT_ROWS
    ]


def _evaluate_view(model_admin: admin.ModelAdmin, request, base: KnowledgeBase):
    url = reverse("admin:knowledge_knowledgebase_evaluate", args=[base.id])
    sets = list(evaluation_set_list(knowledge_base=base))
    form = EvaluationSetForm()
    if request.method == "POST":
        action = request.POST.get("action")
        chosen = next((s for s in sets if str(s.id) == request.POST.get("set")), None)
        try:
            if action == "upload":
                form = EvaluationSetForm(request.POST, request.FILES)
                if form.is_valid():
                    created = evaluation_set_create(
                        knowledge_base=base,
                        user=request.user,
                        upload=form.cleaned_data["file"],
                        name=form.cleaned_data["name"],
                    )
                    count = created.question_count
                    messages.success(
                        request,
                        ngettext("%(n)d question uploaded.", "%(n)d questions uploaded.", count)
                        % {"n": count},
                    )
                    return redirect(f"{url}?set={created.id}")
            elif action == "start" and chosen is not None:
                run, _task_id = evaluation_run_start(evaluation_set=chosen, user=request.user)
                messages.success(request, _("Run queued."))
                return redirect(f"{url}?set={chosen.id}&run={run.id}")
            elif action == "delete" and chosen is not None:
                evaluation_set_delete(evaluation_set=chosen)
                messages.success(request, _("Set and its runs deleted."))
                return redirect(url)
        except ApplicationError as exc:
            messages.error(request, exc.message)
            rows = exc.details.get("errors") or []
            for error in rows[:20]:
                messages.error(request, _("Row %(row)s: %(message)s") % error)
    selected = next((s for s in sets if str(s.id) == request.GET.get("set")), None)
    selected = selected or (sets[0] if sets else None)
    runs, run, by_mode, misses, history = [], None, {}, [], []
    if selected is not None:
        runs = list(evaluation_run_list(knowledge_base=base, evaluation_set_id=selected.id))
        run = next((r for r in runs if str(r.id) == request.GET.get("run")), None)
        run = run or (runs[0] if runs else None)
        history = evaluation_history(evaluation_set=selected)
    if run is not None:
        by_mode = evaluation_metrics_by_mode(run=run)
        labels = dict(EvaluationModeMetrics.Mode.choices)
        for result in evaluation_run_misses(run=run)[:MISSES_SHOWN]:
            # Modes in the report's order, with their translated names.
            result.retrieved_by_mode = [
                (labels[mode], result.retrieved[mode]) for mode in MODES if mode in result.retrieved
            ]
            misses.append(result)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "original": base,
        "title": _("Evaluate retrieval of “%(name)s”") % {"name": base.name},
        "form": form,
        "sets": sets,
        "selected_set": selected,
        "runs": runs,
        "run": run,
        "modes": MODES,
        "report_rows": _report_rows(by_mode) if run and run.status == "completed" else [],
        "misses": misses,
        "history": history,
        "js_strings": js_strings(EVALUATION_JS_STRINGS),
        # The page reloads itself while the run shown is unfinished, so progress moves.
        "auto_refresh_seconds": 3 if run is not None and not run.finished else 0,
    }
    return TemplateResponse(request, "admin/knowledge/evaluate.html", context)


def _documents_url(knowledge_base_id: int) -> str:
    changelist = reverse("admin:knowledge_document_changelist")
    return f"{changelist}?knowledge_base__id__exact={knowledge_base_id}"


def _retrieval_test_view(model_admin: admin.ModelAdmin, request):
    form = RetrievalTestForm(request.GET or None, initial={"mode": "hybrid"})
    hits = None
    if form.is_bound and form.is_valid():
        bases = form.cleaned_data["knowledge_bases"]
        try:
            hits = chunk_search(
                user=request.user,
                query=form.cleaned_data["query"],
                knowledge_base_ids=[b.id for b in bases] or None,
                top_k=form.cleaned_data["top_k"],
                score_threshold=form.cleaned_data["score_threshold"],
                mode=form.cleaned_data["mode"],
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": _("Retrieval test"),
        "form": form,
        "hits": hits,
    }
    return TemplateResponse(request, "admin/knowledge/retrieval_test.html", context)


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "visibility", "document_total", "embedding_model",
                    "chunk_size", "chunk_overlap", "top_k", "tools"]  # fmt: skip
    list_filter = ["visibility"]
    search_fields = ["name", "description", "owner__username"]
    autocomplete_fields = ["owner"]
    filter_horizontal = ["shared_with"]
    readonly_fields = ["embedding_model", "created_at", "updated_at"]
    actions = ["reindex_bases"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_documents=Count("documents"))

    @admin.display(description=_("Documents"), ordering="_documents")
    def document_total(self, base):
        return base._documents

    @admin.display(description=_("Tools"))
    def tools(self, base):
        return format_html(
            '<a href="{}">{}</a> · <a href="{}">{}</a> · <a href="{}">{}</a> · <a href="{}">{}</a>',
            reverse("admin:knowledge_knowledgebase_upload", args=[base.id]),
            _("Upload"),
            _documents_url(base.id),
            _("Documents"),
            reverse("admin:knowledge_retrieval_test") + f"?knowledge_bases={base.id}",
            _("Retrieval test"),
            reverse("admin:knowledge_knowledgebase_evaluate", args=[base.id]),
            _("Evaluate"),
        )

    def get_urls(self):
        own = [
            path(
                "<id:knowledge_base_id>/upload/",
                self.admin_site.admin_view(self.upload_view),
                name="knowledge_knowledgebase_upload",
            ),
            path(
                "<id:knowledge_base_id>/evaluate/",
                self.admin_site.admin_view(self.evaluate_view),
                name="knowledge_knowledgebase_evaluate",
            ),
            path(
                "retrieval-test/",
                self.admin_site.admin_view(self.retrieval_test_view),
                name="knowledge_retrieval_test",
            ),
        ]
        return own + super().get_urls()

    def upload_view(self, request, knowledge_base_id: int):
        base = get_object_or_404(KnowledgeBase, id=knowledge_base_id)
        if not self.has_change_permission(request, base):
            return redirect("admin:index")
        form = UploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                # Staff act for the owner here: the owner's storage quotas do not apply.
                created = documents_upload(
                    knowledge_base=base,
                    user=request.user,
                    files=form.cleaned_data["files"],
                    enforce_quota=False,
                )
            except ApplicationError as exc:
                filename = exc.details.get("filename")
                messages.error(request, f"{filename}: {exc.message}" if filename else exc.message)
            else:
                messages.success(
                    request,
                    ngettext(
                        "%(n)d document queued for processing.",
                        "%(n)d documents queued for processing.",
                        len(created),
                    )
                    % {"n": len(created)},
                )
                return redirect(_documents_url(base.id))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": base,
            "title": _("Upload documents into “%(name)s”") % {"name": base.name},
            "form": form,
        }
        return TemplateResponse(request, "admin/knowledge/upload.html", context)

    def retrieval_test_view(self, request):
        return _retrieval_test_view(self, request)

    def evaluate_view(self, request, knowledge_base_id: int):
        base = get_object_or_404(KnowledgeBase, id=knowledge_base_id)
        if not self.has_change_permission(request, base):
            return redirect("admin:index")
        return _evaluate_view(self, request, base)

    @admin.action(description=_("Re-index the selected knowledge bases"))
    def reindex_bases(self, request, queryset):
        for base in queryset:
            knowledge_base_reindex(knowledge_base=base, user=request.user)
        self.message_user(request, _("Re-indexing queued."), messages.SUCCESS)

    def delete_model(self, request, obj):
        knowledge_base_delete(knowledge_base=obj)

    def delete_queryset(self, request, queryset):
        for base in queryset:
            knowledge_base_delete(knowledge_base=base)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "knowledge_base", "file_type", "status_badge", "progress_bar",
                    "chunk_count", "short_error", "size", "updated_at"]  # fmt: skip
    list_filter = ["status", "file_type", "knowledge_base"]
    search_fields = ["title", "sha256"]
    readonly_fields = ["knowledge_base", "uploaded_by", "file", "file_type", "size", "sha256",
                       "status", "progress", "chunk_count", "error", "task_id", "timings",
                       "created_at", "updated_at", "processing_started_at",
                       "processed_at"]  # fmt: skip
    fields = ["title", *readonly_fields]
    actions = ["reindex_documents", "retry_failed", "delete_documents"]
    list_select_related = ["knowledge_base"]

    def has_add_permission(self, request):
        return False  # documents arrive through the upload page, which checks and queues them

    def changelist_view(self, request, extra_context=None):
        busy = Document.objects.filter(
            status__in=[Document.Status.PENDING, Document.Status.PROCESSING]
        ).exists()
        # The page reloads itself while anything is in flight, so progress moves on screen.
        extra_context = {**(extra_context or {}), "auto_refresh_seconds": 3 if busy else 0}
        return super().changelist_view(request, extra_context=extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # ours removes vectors and files too
        return actions

    @admin.display(description=_("Status"), ordering="status")
    def status_badge(self, document):
        colours = {"ready": "#2e7d32", "failed": "#c62828", "processing": "#1565c0"}
        return format_html(
            '<strong style="color:{}">{}</strong>',
            colours.get(document.status, "#555"),
            document.get_status_display(),
        )

    @admin.display(description=_("Progress"), ordering="progress")
    def progress_bar(self, document):
        return format_html(
            '<progress max="100" value="{}" style="width:8em"></progress> {}%',
            document.progress,
            document.progress,
        )

    @admin.display(description=_("Error"))
    def short_error(self, document):
        return document.error[:120]

    @admin.action(description=_("Re-index selected documents"))
    def reindex_documents(self, request, queryset):
        for document in queryset:
            document_reindex(document=document, user=request.user)
        self.message_user(request, _("Re-indexing queued."), messages.SUCCESS)

    @admin.action(description=_("Retry failed documents"))
    def retry_failed(self, request, queryset):
        failed = list(queryset.filter(status=Document.Status.FAILED))
        for document in failed:
            document_reindex(document=document, user=request.user)
        self.message_user(
            request, _("%(n)d failed documents queued again.") % {"n": len(failed)}, messages.INFO
        )

    @admin.action(description=_("Delete selected documents and their vectors"))
    def delete_documents(self, request, queryset):
        count = 0
        for document in queryset:
            document_delete(document=document)
            count += 1
        self.message_user(request, _("%(n)d documents deleted.") % {"n": count}, messages.SUCCESS)

    def delete_model(self, request, obj):
        document_delete(document=obj)


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    """Read-only: chunks are derived from documents and change only by re-indexing."""

    list_display = ["id", "document", "ordinal", "page", "section", "token_count"]
    list_filter = ["knowledge_base"]
    search_fields = ["text"]
    list_select_related = ["document"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
