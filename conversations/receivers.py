"""Signal receivers of conversations, connected in ready():

- A socket lasts as long as the session it was opened with (docs/chat.md): a logout closes
  the sockets of that session, and a change to the user (deactivated, password changed,
  deleted) makes all their sockets check their session again.
- Cache invalidation for writes that reach conversations without a service of ours."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete

from openspark.core.cache import cache_bump, user_scope

from . import realtime


def _logged_out(sender, request, user, **kwargs) -> None:
    session = getattr(request, "session", None)
    if user is None or session is None or not session.session_key:
        return
    # Sent before logout() flushes the session: the sockets close on the event itself, not
    # on a check of the session, which may still stand for a moment.
    realtime.publish_to_user(
        user_id=user.pk,
        event={"type": "session.ended", "session": realtime.session_digest(session.session_key)},
    )


def _user_changed(sender, instance, created=False, update_fields=None, **kwargs) -> None:
    # A new user has no sockets yet; logging in saves last_login, which sessions ignore.
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    user_id = instance.pk
    # After the commit: the sockets' check must read the change.
    transaction.on_commit(
        lambda: realtime.publish_to_user(user_id=user_id, event={"type": "user.changed"})
    )


def _knowledge_base_deleting(sender, instance, **kwargs) -> None:
    # The delete cascades to conversations' base lists without a signal of its own: the
    # owners' cached conversation lists show knowledge_base_ids. Read before the rows go.
    owners = set(instance.conversations.values_list("owner_id", flat=True))
    cache_bump(scopes=[user_scope(owner_id) for owner_id in owners])


def connect() -> None:
    user_logged_out.connect(_logged_out, dispatch_uid="chat-sockets-logout")
    post_save.connect(_user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="chat-user")
    post_delete.connect(
        _user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="chat-user-delete"
    )
    pre_delete.connect(
        _knowledge_base_deleting, sender="knowledge.KnowledgeBase", dispatch_uid="cache-kb-del"
    )
