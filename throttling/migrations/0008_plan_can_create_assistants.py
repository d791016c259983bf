from django.db import migrations, models

from throttling.plans import ASSISTANT_CREATION


def by_tier(apps, schema_editor):
    """The column starts off everywhere; pro and enterprise get it on."""
    Plan = apps.get_model("throttling", "Plan")
    for tier, allowed in ASSISTANT_CREATION.items():
        Plan.objects.filter(tier=tier).update(can_create_assistants=allowed)


class Migration(migrations.Migration):
    dependencies = [("throttling", "0007_plan_group_limits_scaled_polling")]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="can_create_assistants",
            field=models.BooleanField(
                default=False,
                help_text="Users on this plan may create and edit their own assistants.",
            ),
        ),
        migrations.RunPython(by_tier, migrations.RunPython.noop),
    ]
