"""Writes of assistants: create, update, delete, and the one check of their settings (used by
the API and by the admin form), so an unknown model or an unlendable base is refused when the
assistant is saved, not when someone chats with it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.translation import gettext as _

from knowledge.selectors import knowledge_base_ids_readable
from openspark.core.errors import ApplicationError
from openspark.llm import UnknownChatModel, chat_model_check

from .models import ICONS, Assistant
from .selectors import (
    assistant_creation_allowed,
    assistant_get_editable,
    knowledge_bases_lendable,
)

MAX_SUGGESTED_QUESTIONS = 6
MAX_QUESTION_CHARS = 200

# Fields a caller may set, with the value a new assistant gets when they are not given.
DEFAULTS: dict[str, Any] = {
    "description": "",
    "icon": ICONS[0],
    "system_prompt": "",
    "provider": "",
    "model": "",
    "temperature": None,
    "max_tokens": None,
    "opening_message": "",
    "suggested_questions": [],
    "sources_only": False,
    "score_threshold": None,
    "fallback_message": "",
    "visibility": Assistant.Visibility.PRIVATE,
}


def max_tokens_limit() -> int:
    """The most an assistant may ask for: what a reply may reserve from the token quota
    (CHAT_REPLY_MAX_TOKENS, else CHAT_QUOTA_REPLY_TOKENS — GLM-4's output maximum)."""
    return int(getattr(settings, "CHAT_REPLY_MAX_TOKENS", 0)) or int(
        getattr(settings, "CHAT_QUOTA_REPLY_TOKENS", 4095)
    )


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError(message, details={field: [message]})


def _creation_check(*, user) -> None:
    if assistant_creation_allowed(user=user):
        return
    raise ApplicationError(
        _("Your plan does not include creating assistants."),
        code="permission_denied",
        status_code=403,
    )


def _users_for_sharing(usernames: Iterable[str]) -> list:
    """Active accounts only. A name nobody has and one whose account cannot be shared with
    get the same answer, so this tells no one which usernames exist (as knowledge bases)."""
    names = sorted({name.strip() for name in usernames if name.strip()})
    users = list(get_user_model().objects.filter(username__in=names, is_active=True))
    if refused := sorted(set(names) - {u.username for u in users}):
        raise _invalid(
            "shared_with",
            _("These users cannot be shared with: %(names)s") % {"names": ", ".join(refused)},
        )
    return users


def assistant_settings_check(
    *,
    editor,
    owner,
    values: dict[str, Any],
    knowledge_base_ids: Sequence[int],
    attached: Iterable[int] = (),
) -> dict[str, Any]:
    """The cleaned settings, or an ApplicationError naming the field (400 `validation_error`;
    404 for a base the editor may not read, as everywhere else). `values` holds every field
    of DEFAULTS and `name`; `attached`: the bases the assistant has now, whose reading was
    checked when they were added (staff may edit an assistant whose bases only its owner
    reads); every base is checked for lending."""
    values = dict(values)
    for field in ("name", "description", "system_prompt", "opening_message", "fallback_message"):
        values[field] = (values[field] or "").strip()
    if not values["name"]:
        raise _invalid("name", _("An assistant needs a name."))
    if values["icon"] not in ICONS:
        raise _invalid("icon", _("Choose one of the offered icons."))
    provider, model = values["provider"] or "", values["model"] or ""
    try:
        chat_model_check(provider=provider, model=model)
    except UnknownChatModel as error:
        messages = {
            "unknown_provider": _("This provider does not exist."),
            "provider_not_configured": _("This provider is not configured on this server."),
            "unknown_model": _("This model is not available on this server."),
        }
        raise _invalid("model", messages[error.reason]) from error
    temperature = values["temperature"]
    if temperature is not None and not 0 <= float(temperature) <= 1:
        raise _invalid("temperature", _("The temperature must be between 0 and 1."))
    threshold = values["score_threshold"]
    if threshold is not None and not -1 <= float(threshold) <= 1:
        raise _invalid("score_threshold", _("The relevance threshold must be between -1 and 1."))
    limit = max_tokens_limit()
    if values["max_tokens"] is not None and not 1 <= int(values["max_tokens"]) <= limit:
        raise _invalid(
            "max_tokens", _("The reply length must be between 1 and %(limit)d.") % {"limit": limit}
        )
    questions = [q.strip() for q in values["suggested_questions"] or [] if q and q.strip()]
    if len(questions) > MAX_SUGGESTED_QUESTIONS or any(
        len(q) > MAX_QUESTION_CHARS for q in questions
    ):
        raise _invalid(
            "suggested_questions",
            _("At most %(count)d suggested questions of %(chars)d characters each.")
            % {"count": MAX_SUGGESTED_QUESTIONS, "chars": MAX_QUESTION_CHARS},
        )
    values["suggested_questions"] = questions
    if values["visibility"] not in Assistant.Visibility.values:
        raise _invalid("visibility", _("Unknown visibility."))
    attached = set(attached)
    added = knowledge_base_ids_readable(
        user=editor, requested_ids=[i for i in knowledge_base_ids if i not in attached]
    )
    ids = sorted(set(added) | (set(knowledge_base_ids) & attached))
    if values["visibility"] != Assistant.Visibility.PRIVATE and ids:
        lendable = set(
            knowledge_bases_lendable(owner=owner).filter(id__in=ids).values_list("id", flat=True)
        )
        if refused := sorted(set(ids) - lendable):
            error = _invalid(
                "knowledge_base_ids",
                _(
                    "An assistant other people use may answer only from knowledge bases its "
                    "owner owns or everyone can read."
                ),
            )
            error.details["refused_ids"] = refused
            raise error
    if values["sources_only"] and not ids:
        raise _invalid(
            "sources_only", _("Answering only from sources needs at least one knowledge base.")
        )
    values["knowledge_base_ids"] = ids
    return values


def _save(*, assistant: Assistant, values: dict[str, Any], shared_with: list | None) -> Assistant:
    ids = values.pop("knowledge_base_ids")
    for field, value in values.items():
        setattr(assistant, field, value)
    with transaction.atomic():
        assistant.save()
        assistant.knowledge_bases.set(ids)
        if shared_with is not None:
            assistant.shared_with.set(shared_with)
    return assistant


def assistant_create(
    *,
    user,
    name: str,
    knowledge_base_ids: Sequence[int] = (),
    shared_with: Iterable[str] = (),
    **fields: Any,
) -> Assistant:
    """A new assistant owned by `user` (staff, or a plan with `can_create_assistants`)."""
    _creation_check(user=user)
    values = assistant_settings_check(
        editor=user,
        owner=user,
        values={**DEFAULTS, **fields, "name": name},
        knowledge_base_ids=knowledge_base_ids,
    )
    users = _users_for_sharing(shared_with)
    return _save(assistant=Assistant(owner=user), values=values, shared_with=users)


def assistant_update(
    *,
    user,
    assistant_id: int,
    knowledge_base_ids: Sequence[int] | None = None,
    shared_with: Iterable[str] | None = None,
    **fields: Any,
) -> Assistant:
    """Change the given fields. Owner (on a plan that allows assistants) or staff; the whole
    result is checked again, so a visibility change cannot lend a base it may not."""
    assistant = assistant_get_editable(user=user, assistant_id=assistant_id)
    _creation_check(user=user)
    current = {field: getattr(assistant, field) for field in (*DEFAULTS, "name")}
    attached = list(assistant.knowledge_bases.values_list("id", flat=True))
    values = assistant_settings_check(
        editor=user,
        owner=assistant.owner,
        values={**current, **fields},
        knowledge_base_ids=attached if knowledge_base_ids is None else knowledge_base_ids,
        attached=attached,
    )
    users = None if shared_with is None else _users_for_sharing(shared_with)
    return _save(assistant=assistant, values=values, shared_with=users)


def assistant_delete(*, user, assistant_id: int) -> None:
    """Its conversations stay and continue with the default assistant."""
    assistant_get_editable(user=user, assistant_id=assistant_id).delete()
