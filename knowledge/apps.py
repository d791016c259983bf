import resource

from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"

    def ready(self) -> None:
        from celery.signals import worker_process_init, worker_ready

        worker_ready.connect(_worker_ready, weak=False, dispatch_uid="knowledge-warm-embedder")
        worker_process_init.connect(
            _pool_process_init, weak=False, dispatch_uid="knowledge-pool-process"
        )


def _worker_ready(sender, **kwargs) -> None:
    from celery.concurrency.prefork import TaskPool

    # A prefork worker's main process runs no task: its children load the model themselves.
    if not isinstance(sender.pool, TaskPool):
        _warm_embedder()


def _pool_process_init(**kwargs) -> None:
    """Each prefork child (the ingest worker's; a solo pool's one process) starts with its
    memory limit, then loads the model in the background."""
    _limit_memory()
    _warm_embedder()


def _limit_memory() -> None:
    """Cap the process's data segment: an allocation past it fails (Python raises MemoryError,
    which the pipeline turns into a failed document) instead of growing until the kernel's
    OOM killer picks a victim, maybe another service.

    RLIMIT_DATA (private writable memory: heap and anonymous mappings) rather than RLIMIT_AS:
    with the local model loaded and embedding, a worker measured VmData 0.81 GB, RSS 0.84 GB
    but VmSize 1.69 GB, most of the difference torch's read-only library mappings; under
    RLIMIT_AS = 1.5 GB torch could not allocate 5 MB for a batch. RLIMIT_DATA tracks real use.
    `--max-memory-per-child` alone is no limit: Celery checks it only after a task ends."""
    from django.conf import settings

    limit_mb = settings.KNOWLEDGE_INGEST_MEMORY_LIMIT_MB
    if limit_mb <= 0:
        return
    limit = limit_mb * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _warm_embedder() -> None:
    from django.conf import settings

    if settings.KNOWLEDGE_WARM_EMBEDDER_ON_WORKER_START:
        from .embedders import local_embedder_warm_in_background

        local_embedder_warm_in_background()
