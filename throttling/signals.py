"""Admin edits reach the limiter without a restart: a save or delete clears this process's
configuration snapshot at once; other processes reload theirs within THROTTLE_CONFIG_TTL.
A plan edit also invalidates every cached profile (each shows its plan)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from openspark.core.cache import PLANS_SCOPE, cache_bump

from .models import AccessListEntry, ExtraRule, LayerPolicy, Plan
from .selectors import limiter_config_invalidate


@receiver([post_save, post_delete], sender=Plan)
@receiver([post_save, post_delete], sender=LayerPolicy)
@receiver([post_save, post_delete], sender=ExtraRule)
@receiver([post_save, post_delete], sender=AccessListEntry)
def _limiter_config_changed(**kwargs) -> None:
    limiter_config_invalidate()


@receiver([post_save, post_delete], sender=Plan)
def _plan_changed(**kwargs) -> None:
    cache_bump(scope=PLANS_SCOPE)
