"""The plan's numbers: free 100, pro 500, enterprise 2,000 requests/min; endpoint groups
conversations 60, messages 120, knowledge 30 per minute; knowledge-base storage scaled by tier.
Used by the seeding migrations."""

MB = 1024 * 1024
GB = 1024 * MB

DEFAULT_PLANS = [
    # tier, name, requests/min, monthly tokens, default
    ("free", "Free", 100, 200_000, True),
    ("pro", "Pro", 500, 2_000_000, False),
    ("enterprise", "Enterprise", 2000, 20_000_000, False),
]
ENDPOINT_DEFAULTS = {
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
                **ENDPOINT_DEFAULTS,
                **{k: v for k, v in KNOWLEDGE_QUOTAS[tier].items() if k in known},
                **(
                    {"can_create_assistants": ASSISTANT_CREATION[tier]}
                    if "can_create_assistants" in known
                    else {}
                ),
            },
        )
