"""Admin edits reach the limiter without a restart: a save or delete clears this process's
configuration snapshot at once; other processes reload theirs within THROTTLE_CONFIG_TTL."""

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import AccessListEntry, ExtraRule, LayerPolicy, Plan
from .selectors import limiter_config_invalidate
from .services import api_key_cache


@receiver([post_save, post_delete], sender=Plan)
@receiver([post_save, post_delete], sender=LayerPolicy)
@receiver([post_save, post_delete], sender=ExtraRule)
@receiver([post_save, post_delete], sender=AccessListEntry)
def _limiter_config_changed(**kwargs) -> None:
    limiter_config_invalidate()


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _user_changed(**kwargs) -> None:
    # API-key identities cache the user's plan for a few seconds; a plan change applies now.
    api_key_cache.clear()
