"""The plan's numbers: free 100, pro 500, enterprise 2,000 requests/min; endpoint groups
conversations 60, messages 120, knowledge 30 (and polling 60) per minute on free, scaled with
the tier like its requests/min; knowledge-base storage scaled by tier. Used by the seeding
migrations."""

MB = 1024 * 1024
GB = 1024 * MB

DEFAULT_PLANS = [
    # tier, name, requests/min, monthly tokens, default
    ("free", "Free", 100, 200_000, True),
    ("pro", "Pro", 500, 2_000_000, False),
    ("enterprise", "Enterprise", 2000, 20_000_000, False),
]
# The free tier's endpoint-group limits. Each tier gets them times its requests/min over
# free's (pro 500/100 = 5, enterprise 2,000/100 = 20), so every group keeps the same share
# of the plan's budget on every tier (reasons: docs/throttling.md, "Plans and groups").
FREE_ENDPOINT_LIMITS = {
    "conversations_per_minute": 60,
    "messages_per_minute": 120,
    "knowledge_per_minute": 30,
    "polling_per_minute": 60,
}
TIER_SCALE = {"free": 1, "pro": 5, "enterprise": 20}
ENDPOINT_LIMITS = {
    tier: {field: limit * scale for field, limit in FREE_ENDPOINT_LIMITS.items()}
    for tier, scale in TIER_SCALE.items()
}
# What every tier was seeded with before the groups scaled with the plan (and had no polling
# group): a plan still at all three has never had its group limits edited by staff.
UNSCALED_ENDPOINT_LIMITS = {
    "conversations_per_minute": 60,
    "messages_per_minute": 120,
    "knowledge_per_minute": 30,
}
# Per user, over the knowledge bases they own; 0 would mean unlimited.
KNOWLEDGE_QUOTAS = {
    "free": {"storage_quota_bytes": 200 * MB, "document_quota": 100, "knowledge_base_quota": 5},
    "pro": {"storage_quota_bytes": 5 * GB, "document_quota": 2_000, "knowledge_base_quota": 50},
    "enterprise": {
        "storage_quota_bytes": 50 * GB,
        "document_quota": 20_000,
        "knowledge_base_quota": 500,
    },
}

# Whether users may create their own assistants (staff always may).
ASSISTANT_CREATION = {"free": False, "pro": True, "enterprise": True}


def seed_default_plans(plan_model=None) -> None:
    """Create the three tiers if missing; never overwrite limits staff have edited."""
    if plan_model is None:
        from throttling.models import Plan as plan_model
    # Migration 0002's historical model predates the storage quotas (0006 sets them).
    known = {field.name for field in plan_model._meta.get_fields()}
    for tier, name, rpm, tokens, default in DEFAULT_PLANS:
        plan_model.objects.get_or_create(
            tier=tier,
            defaults={
                "name": name,
                "requests_per_minute": rpm,
                "monthly_token_quota": tokens,
                "is_default": default,
                **{k: v for k, v in ENDPOINT_LIMITS[tier].items() if k in known},
                **{k: v for k, v in KNOWLEDGE_QUOTAS[tier].items() if k in known},
                **(
                    {"can_create_assistants": ASSISTANT_CREATION[tier]}
                    if "can_create_assistants" in known
                    else {}
                ),
            },
        )


def endpoint_limits_scale(plan_model) -> list[str]:
    """Give each tier its scaled endpoint-group limits, but only where staff never edited them:
    a plan whose group limits are all still the unscaled seed (60/120/30) gets its tier's, one
    with any of them edited keeps all of its own. The polling group is new: every plan still at
    the column's default (free's 60) gets its tier's. Returns the tiers whose groups scaled.
    Run by migration 0007 with its historical model."""
    scaled = []
    for tier, limits in ENDPOINT_LIMITS.items():
        plans = plan_model.objects.filter(tier=tier)
        plans.filter(polling_per_minute=FREE_ENDPOINT_LIMITS["polling_per_minute"]).update(
            polling_per_minute=limits["polling_per_minute"]
        )
        new = {field: limits[field] for field in UNSCALED_ENDPOINT_LIMITS}
        if new != UNSCALED_ENDPOINT_LIMITS and plans.filter(**UNSCALED_ENDPOINT_LIMITS).update(
            **new
        ):
            scaled.append(tier)
    return scaled


def endpoint_limits_unscale(plan_model) -> None:
    """The reverse of `endpoint_limits_scale`: plans still at their tier's scaled limits go
    back to the unscaled seed (the polling column is dropped by the migration)."""
    for tier, limits in ENDPOINT_LIMITS.items():
        scaled = {field: limits[field] for field in UNSCALED_ENDPOINT_LIMITS}
        plan_model.objects.filter(tier=tier, **scaled).update(**UNSCALED_ENDPOINT_LIMITS)
