"""Cache invalidation for writes that reach conversations without a service of ours."""

from __future__ import annotations

from django.db.models.signals import pre_delete

from openspark.core.cache import cache_bump, user_scope


def _knowledge_base_deleting(sender, instance, **kwargs) -> None:
    # The delete cascades to conversations' base lists without a signal of its own: the
    # owners' cached conversation lists show knowledge_base_ids. Read before the rows go.
    owners = set(instance.conversations.values_list("owner_id", flat=True))
    cache_bump(scopes=[user_scope(owner_id) for owner_id in owners])


def connect() -> None:
    pre_delete.connect(
        _knowledge_base_deleting, sender="knowledge.KnowledgeBase", dispatch_uid="cache-kb-del"
    )
