from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"

    def ready(self) -> None:
        from celery.signals import worker_ready

        worker_ready.connect(_warm_embedder, weak=False, dispatch_uid="knowledge-warm-embedder")


def _warm_embedder(**kwargs) -> None:
    from django.conf import settings

    if settings.KNOWLEDGE_WARM_EMBEDDER_ON_WORKER_START:
        from .embedders import local_embedder_warm_in_background

        local_embedder_warm_in_background()
