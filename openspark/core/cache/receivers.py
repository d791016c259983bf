"""Signal receivers for writes that do not go through a service of ours: the admin's user
and plan forms (and any other save of those models). Connected in CoreConfig.ready()."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete

from .keys import PLANS_SCOPE, user_scope
from .versions import cache_bump


def _plan_changed(sender, **kwargs) -> None:
    cache_bump(scope=PLANS_SCOPE)


def _user_changed(sender, instance, update_fields=None, **kwargs) -> None:
    # Logging in saves last_login, which no cached read shows.
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    cache_bump(scope=user_scope(instance.pk))


def _knowledge_base_deleting(sender, instance, **kwargs) -> None:
    # The delete cascades to conversations' base lists without a signal of its own: the
    # owners' cached conversation lists show knowledge_base_ids. Read before the rows go.
    related = getattr(instance, "conversations", None)
    if related is None:
        return
    owners = set(related.values_list("owner_id", flat=True))
    cache_bump(scopes=[user_scope(owner_id) for owner_id in owners])


def _warm_on_login(sender, request, user, **kwargs) -> None:
    from .tasks import cache_warm_logins
    from .warmup import login_warm_schedule

    def schedule():
        if login_warm_schedule(user_id=user.pk):
            cache_warm_logins.delay()

    # robust: a broker outage must not turn a successful login into an error.
    transaction.on_commit(schedule, robust=True)


def connect() -> None:
    post_save.connect(_plan_changed, sender="throttling.Plan", dispatch_uid="cache-plan-save")
    post_delete.connect(_plan_changed, sender="throttling.Plan", dispatch_uid="cache-plan-del")
    post_save.connect(_user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="cache-user")
    post_delete.connect(
        _user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="cache-user-del"
    )
    pre_delete.connect(
        _knowledge_base_deleting, sender="knowledge.KnowledgeBase", dispatch_uid="cache-kb-del"
    )
    user_logged_in.connect(_warm_on_login, dispatch_uid="cache-warm-on-login")
