from __future__ import annotations

from django.db.models import F

from .models import TokenUsage
from .selectors import month_start


def token_usage_record(*, user_id: int, prompt_tokens: int, completion_tokens: int) -> None:
    """Add a reply's tokens to the user's month; an F() update so concurrent workers add up."""
    month = month_start()
    usage, _created = TokenUsage.objects.get_or_create(user_id=user_id, month=month)
    TokenUsage.objects.filter(pk=usage.pk).update(
        prompt_tokens=F("prompt_tokens") + max(0, prompt_tokens),
        completion_tokens=F("completion_tokens") + max(0, completion_tokens),
    )
