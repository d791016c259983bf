"""The plan's numbers: free 100, pro 500, enterprise 2,000 requests/min; endpoint groups
conversations 60, messages 120, knowledge 30 per minute. Used by the seeding migration."""

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


def seed_default_plans(plan_model=None) -> None:
    """Create the three tiers if missing; never overwrite limits staff have edited."""
    if plan_model is None:
        from throttling.models import Plan as plan_model
    for tier, name, rpm, tokens, default in DEFAULT_PLANS:
        plan_model.objects.get_or_create(
            tier=tier,
            defaults={
                "name": name,
                "requests_per_minute": rpm,
                "monthly_token_quota": tokens,
                "is_default": default,
                **ENDPOINT_DEFAULTS,
            },
        )
