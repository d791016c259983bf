"""The plan's numbers: free 100, pro 500, enterprise 2,000 requests/min; endpoint groups
conversations 60, messages 120, knowledge 30 per minute."""

from django.db import migrations

PLANS = [
    # tier, name, req/min, monthly tokens, default
    ("free", "Free", 100, 200_000, True),
    ("pro", "Pro", 500, 2_000_000, False),
    ("enterprise", "Enterprise", 2000, 20_000_000, False),
]


def seed(apps, schema_editor):
    Plan = apps.get_model("throttling", "Plan")
    for tier, name, rpm, tokens, default in PLANS:
        Plan.objects.update_or_create(
            tier=tier,
            defaults={
                "name": name,
                "requests_per_minute": rpm,
                "conversations_per_minute": 60,
                "messages_per_minute": 120,
                "knowledge_per_minute": 30,
                "monthly_token_quota": tokens,
                "is_default": default,
            },
        )


def unseed(apps, schema_editor):
    apps.get_model("throttling", "Plan").objects.filter(tier__in=[p[0] for p in PLANS]).delete()


class Migration(migrations.Migration):
    dependencies = [("throttling", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
