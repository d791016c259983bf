"""Knowledge bases, their documents and chunks. The database is the source of truth;
vectors in Milvus are derived from Chunk rows and can be rebuilt from them."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class KnowledgeBase(models.Model):
    class Visibility(models.TextChoices):
        PRIVATE = "private", _("Private")
        SHARED = "shared", _("Shared with listed users")
        PUBLIC = "public", _("Everyone")

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="knowledge_bases"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE
    )
    shared_with = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="shared_knowledge_bases"
    )
    embedding_model = models.CharField(
        max_length=100, blank=True, help_text=_("Empty: the configured default embedder.")
    )
    chunk_size = models.PositiveIntegerField(
        default=500, help_text=_("Largest chunk, in characters.")
    )
    chunk_overlap = models.PositiveIntegerField(
        default=50, help_text=_("Characters repeated from the end of the previous chunk.")
    )
    top_k = models.PositiveSmallIntegerField(default=5)
    score_threshold = models.FloatField(
        default=0.0,
        help_text=_(
            "Lowest cosine similarity for a chunk found only by meaning; keyword matches "
            "are always ranked."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Document(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        PROCESSING = "processing", _("Processing")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="documents"
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="uploaded_documents",
    )  # fmt: skip
    file = models.FileField(upload_to="documents/%Y/%m/")
    title = models.CharField(max_length=255)
    file_type = models.CharField(max_length=10)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    # Runs begun since the last one that ended (ready, failed, or handed back for a retry): a
    # run whose worker process died leaves it raised, and at KNOWLEDGE_INGEST_MAX_ATTEMPTS the
    # document is failed instead of run again, however it comes back (redelivery, the sweep).
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    processing_started_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Seconds per stage of the last run (parse, split, embed, store), for staff and benchmarks.
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["knowledge_base", "sha256"], name="one_copy_of_a_file_per_base"
            )
        ]
        indexes = [models.Index(fields=["status", "updated_at"])]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    # Denormalised so retrieval can filter by base without a join.
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="chunks"
    )
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    page = models.PositiveIntegerField(null=True, blank=True)
    section = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["document_id", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="one_chunk_per_ordinal")
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"


class EvaluationSet(models.Model):
    """Questions with known answers for one base, uploaded by staff (CSV or JSON Lines) and
    validated on upload; `questions` holds [{row, question, document, answer}] as written
    (knowledge/evaluation.py). Expected documents are looked up again at each run, by id or
    title, so a set outlives re-indexing and re-uploads."""

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="evaluation_sets"
    )
    name = models.CharField(max_length=200)
    filename = models.CharField(max_length=255)
    file_type = models.CharField(max_length=10)
    questions = models.JSONField(default=list)
    question_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class EvaluationRun(models.Model):
    """One run of a set against its base as it is now: every question searched in each mode.
    `settings_snapshot` is the base's configuration at the start (chunk size and overlap,
    embedding model, top_k, score threshold, documents and chunks), so runs can be compared
    over time."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        COMPLETED = "completed", _("Completed")
        FAILED = "failed", _("Failed")

    evaluation_set = models.ForeignKey(EvaluationSet, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    settings_snapshot = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.evaluation_set} #{self.id}"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.COMPLETED, self.Status.FAILED)


class EvaluationModeMetrics(models.Model):
    """A completed run's figures for one retrieval mode (knowledge/evaluation.py defines
    them): recall at 1, 5 and 10, MRR (over the first 10), search latency percentiles."""

    class Mode(models.TextChoices):
        HYBRID = "hybrid", _("Hybrid")
        VECTOR = "vector", _("Vector")
        KEYWORD = "keyword", _("Keyword")

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="metrics")
    mode = models.CharField(max_length=10, choices=Mode.choices)
    recall_at_1 = models.FloatField()
    recall_at_5 = models.FloatField()
    recall_at_10 = models.FloatField()
    mrr = models.FloatField()
    latency_p50_ms = models.FloatField()
    latency_p95_ms = models.FloatField()
    misses = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "mode"], name="one_figure_set_per_run_mode")
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.mode}"


class EvaluationResult(models.Model):
    """One question of a completed run: its rank in each mode (null: not in the first 10)
    and, for each mode where it missed (not in the base's top_k), what came instead
    ({mode: [{document_id, document_title, chunk_id, snippet}]})."""

    run = models.ForeignKey(EvaluationRun, on_delete=models.CASCADE, related_name="results")
    row = models.PositiveIntegerField()
    question = models.TextField()
    expected_document = models.CharField(max_length=255, blank=True)
    expected_document_id = models.BigIntegerField(null=True, blank=True)
    expected_answer = models.TextField(blank=True)
    ranks = models.JSONField(default=dict)
    retrieved = models.JSONField(default=dict)
    missed = models.BooleanField(default=False)

    class Meta:
        ordering = ["run", "row"]
        constraints = [
            models.UniqueConstraint(fields=["run", "row"], name="one_result_per_run_row")
        ]

    def __str__(self) -> str:
        return f"{self.run_id} row {self.row}"
