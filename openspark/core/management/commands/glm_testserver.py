"""`manage.py glm_testserver`: the GLM-compatible test server for local development.

Point the app at it with ZHIPUAI_API_KEY=anything and ZHIPUAI_BASE_URL=<the printed URL>.
"""

from django.core.management.base import BaseCommand

from openspark.llm.testserver import add_arguments, serve


class Command(BaseCommand):
    help = "Run the GLM-compatible test server (deterministic replies, configurable latency)."

    def add_arguments(self, parser):
        add_arguments(parser)

    def handle(self, *args, **options):
        serve(
            host=options["host"],
            port=options["port"],
            first_token_delay=options["first_token_delay"],
            token_delay=options["token_delay"],
            api_key=options["api_key"],
            write=self.stdout.write,
        )
