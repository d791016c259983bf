"""Permission-checked reads: the only way views, services and the reply worker reach
assistants. An assistant the caller may not use is "not found", never its settings.

Who may use an assistant: its owner; everyone when its visibility is `everyone`; the listed
users when it is `listed`; staff always. Another user's private assistant is a 404. Only the
owner and staff may change it (`assistant_get_editable`: 403 for a user who may only use it).

Knowledge: an assistant lends its knowledge bases to the people it serves (as in Dify), within
what its owner may lend — `assistant_knowledge_base_ids`."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.utils.translation import gettext as _

from knowledge.models import KnowledgeBase
from knowledge.selectors import knowledge_base_list_readable
from openspark.core.errors import ApplicationError, NotFound
from throttling.selectors import plan_for_user

from .models import Assistant


def assistant_list_usable(*, user) -> QuerySet[Assistant]:
    """The assistants `user` may chat with, by name. Another user's shared assistant counts
    only while its owner's account is active."""
    assistants = Assistant.objects.select_related("owner")
    if user.is_staff:
        return assistants
    return assistants.filter(
        Q(owner=user)
        | Q(owner__is_active=True, visibility=Assistant.Visibility.EVERYONE)
        | Q(owner__is_active=True, visibility=Assistant.Visibility.LISTED, shared_with=user)
    ).distinct()


def assistant_get_for_user(*, user, assistant_id: int) -> Assistant:
    assistant = assistant_list_usable(user=user).filter(id=assistant_id).first()
    if assistant is None:
        raise NotFound(_("No assistant with this id."))
    return assistant


def assistant_creation_allowed(*, user) -> bool:
    """Staff, or a plan with `can_create_assistants` (creating and editing one's own)."""
    return bool(user.is_staff or plan_for_user(user).can_create_assistants)


def assistant_can_edit(*, user, assistant: Assistant) -> bool:
    return bool(user.is_staff or assistant.owner_id == user.id)


def assistant_get_editable(*, user, assistant_id: int) -> Assistant:
    """Owner or staff; a user who may only use the assistant gets a 403, anyone else a 404."""
    assistant = assistant_get_for_user(user=user, assistant_id=assistant_id)
    if not assistant_can_edit(user=user, assistant=assistant):
        raise ApplicationError(
            _("Only the owner can change this assistant."),
            code="permission_denied",
            status_code=403,
        )
    return assistant


def assistant_usable_by(*, user, assistant_id: int) -> Assistant | None:
    """For the reply worker and the send path: the assistant if `user` may still use it."""
    return assistant_list_usable(user=user).filter(id=assistant_id).first()


def knowledge_bases_lendable(*, owner) -> QuerySet[KnowledgeBase]:
    """Bases an assistant owned by `owner` may lend to other people: any base for staff (they
    manage every base), otherwise the owner's own bases and public ones. A base that was only
    shared with the owner is theirs to read, not to pass on."""
    if owner.is_staff and owner.is_active:
        return KnowledgeBase.objects.all()
    return KnowledgeBase.objects.filter(
        Q(owner=owner) | Q(visibility=KnowledgeBase.Visibility.PUBLIC)
    )


def assistant_knowledge_base_ids(*, assistant: Assistant, user) -> list[int]:
    """The assistant's bases that answer `user`, decided at answer time: those its owner may
    lend (`knowledge_bases_lendable`) and those `user` may read anyway. Nothing else: a base
    attached by staff to someone's assistant, or one whose owner stopped sharing it, drops out."""
    ids = list(assistant.knowledge_bases.values_list("id", flat=True))
    if not ids:
        return []
    lent = knowledge_bases_lendable(owner=assistant.owner).filter(id__in=ids)
    readable = knowledge_base_list_readable(user=user).filter(id__in=ids)
    return sorted(
        set(lent.values_list("id", flat=True)) | set(readable.values_list("id", flat=True))
    )


def assistant_reply_fingerprint(assistant: Assistant) -> dict:
    """Everything about the assistant that shapes an answer, for the `ai_response` cache key:
    two assistants never share answers, nor one assistant before and after an edit."""
    return {
        "id": assistant.id,
        "system_prompt": assistant.system_prompt,
        "provider": assistant.provider,
        "model": assistant.model,
        "temperature": assistant.temperature,
        "max_tokens": assistant.max_tokens,
        "knowledge_base_ids": sorted(assistant.knowledge_bases.values_list("id", flat=True)),
        "sources_only": assistant.sources_only,
        "score_threshold": assistant.score_threshold,
        "fallback_message": assistant.fallback_message,
    }
