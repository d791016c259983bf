"""Permission-checked reads for knowledge bases: the only way views and other apps reach them."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from openspark.core.errors import NotFound

from .models import KnowledgeBase


def knowledge_base_list_readable(*, user) -> QuerySet[KnowledgeBase]:
    """Bases the user may read: own, shared with them, or public. Staff read everything."""
    qs = KnowledgeBase.objects.all()
    if user.is_staff:
        return qs
    return qs.filter(
        Q(owner=user)
        | Q(visibility=KnowledgeBase.Visibility.PUBLIC)
        | Q(visibility=KnowledgeBase.Visibility.SHARED, shared_with=user)
    ).distinct()


def knowledge_base_get_readable(*, user, knowledge_base_id: int) -> KnowledgeBase:
    base = knowledge_base_list_readable(user=user).filter(id=knowledge_base_id).first()
    if base is None:
        raise NotFound("No knowledge base with this id.")
    return base


def knowledge_base_ids_readable(*, user, requested_ids: list[int]) -> list[int]:
    """The subset of requested ids the user may read; unreadable ids are a 404, never a leak."""
    requested = set(requested_ids)
    readable = set(
        knowledge_base_list_readable(user=user)
        .filter(id__in=requested)
        .values_list("id", flat=True)
    )
    if missing := requested - readable:
        raise NotFound(
            "No knowledge base with this id.", details={"knowledge_base_ids": sorted(missing)}
        )
    return sorted(readable)
