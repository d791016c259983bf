"""Warm the cache: the most read documents and/or users (by id or most recent login).
Runs inline by default; --async queues Celery tasks instead."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from openspark.core.cache.tasks import cache_warm_hot_documents, cache_warm_users
from openspark.core.cache.warmup import cache_warm_hot_documents_run, cache_warm_user_run
from openspark.core.services import task_enqueue


class Command(BaseCommand):
    help = "Warm the cache for hot documents and/or users."

    def add_arguments(self, parser):
        parser.add_argument("--documents", action="store_true", help="The most read documents.")
        parser.add_argument("--limit", type=int, default=None, help="How many hot documents.")
        parser.add_argument("--user", type=int, action="append", default=[], help="A user id.")
        parser.add_argument(
            "--recent-users", type=int, default=0, help="Users who logged in most recently."
        )
        parser.add_argument("--async", action="store_true", dest="queue", help="Queue tasks.")

    def handle(self, *args, documents, limit, user, recent_users, queue, **options):
        user_ids = list(dict.fromkeys(user))
        if recent_users:
            recent = (
                get_user_model()
                .objects.filter(is_active=True, last_login__isnull=False)
                .order_by("-last_login")
                .values_list("id", flat=True)[:recent_users]
            )
            user_ids += [uid for uid in recent if uid not in user_ids]
        if not (documents or user_ids):
            documents = True  # the periodic use: `manage.py cache_warm`
        if queue:
            if user_ids:
                task_enqueue(task=cache_warm_users, args=[user_ids])
            if documents:
                task_enqueue(task=cache_warm_hot_documents, args=[limit])
            self.stdout.write(f"queued: users={len(user_ids)} documents={documents}")
            return
        warmed_users = sum(cache_warm_user_run(user_id=uid) for uid in user_ids)
        warmed_documents = cache_warm_hot_documents_run(limit=limit) if documents else 0
        self.stdout.write(
            f"warmed: users={len(user_ids)} values={warmed_users} documents={warmed_documents}"
        )
