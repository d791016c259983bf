"""Signal receivers of the cache itself: a login schedules the user's warm-up. (Apps connect
their own receivers that bump what their writes invalidate.) Connected in CoreConfig.ready()."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in
from django.db import transaction


def _warm_on_login(sender, request, user, **kwargs) -> None:
    from openspark.core.services import task_enqueue

    from .tasks import cache_warm_logins
    from .warmup import login_warm_schedule

    def schedule():
        if login_warm_schedule(user_id=user.pk):
            task_enqueue(task=cache_warm_logins, user=user)

    # robust: a broker outage must not turn a successful login into an error.
    transaction.on_commit(schedule, robust=True)


def connect() -> None:
    user_logged_in.connect(_warm_on_login, dispatch_uid="cache-warm-on-login")
