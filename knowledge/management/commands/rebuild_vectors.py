"""Re-create the vector store's contents from Chunk rows (the source of truth)."""

from django.core.management.base import BaseCommand

from knowledge.services import vectors_rebuild


class Command(BaseCommand):
    help = "Re-embed every stored chunk (or one base's) and write the vectors to Milvus again."

    def add_arguments(self, parser):
        parser.add_argument("--knowledge-base", type=int, help="Only this knowledge base id.")

    def handle(self, *args, knowledge_base=None, **options):
        written = vectors_rebuild(
            knowledge_base_id=knowledge_base, log=lambda line: self.stdout.write(line)
        )
        self.stdout.write(self.style.SUCCESS(f"{written} vectors written."))
