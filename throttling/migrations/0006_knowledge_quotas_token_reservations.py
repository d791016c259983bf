from django.db import migrations, models

from throttling.plans import KNOWLEDGE_QUOTAS


def scale_by_tier(apps, schema_editor):
    """The added columns start at the free tier's numbers; give the paid tiers theirs."""
    Plan = apps.get_model("throttling", "Plan")
    for tier, quotas in KNOWLEDGE_QUOTAS.items():
        Plan.objects.filter(tier=tier).update(**quotas)


class Migration(migrations.Migration):
    dependencies = [("throttling", "0005_plan_ai_response_cache")]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="storage_quota_bytes",
            field=models.PositiveBigIntegerField(
                default=209715200,
                help_text="Bytes of uploaded documents a user may keep; 0 means unlimited.",
            ),
        ),
        migrations.AddField(
            model_name="plan",
            name="document_quota",
            field=models.PositiveIntegerField(
                default=100, help_text="Documents a user may keep; 0 means unlimited."
            ),
        ),
        migrations.AddField(
            model_name="plan",
            name="knowledge_base_quota",
            field=models.PositiveIntegerField(
                default=5, help_text="Knowledge bases a user may own; 0 means unlimited."
            ),
        ),
        migrations.AddField(
            model_name="tokenusage",
            name="reserved_tokens",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.RunPython(scale_by_tier, migrations.RunPython.noop),
    ]
