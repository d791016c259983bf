from django.db import migrations, models

from throttling.plans import endpoint_limits_scale, endpoint_limits_unscale


def scale(apps, schema_editor):
    endpoint_limits_scale(apps.get_model("throttling", "Plan"))


def unscale(apps, schema_editor):
    endpoint_limits_unscale(apps.get_model("throttling", "Plan"))


class Migration(migrations.Migration):
    dependencies = [("throttling", "0006_knowledge_quotas_token_reservations")]

    operations = [
        migrations.AddField(
            model_name="plan",
            name="polling_per_minute",
            field=models.PositiveIntegerField(
                default=60,
                help_text="Reads of messages and tasks (a reply's status or stream, a task's "
                "state, a conversation's history), kept apart from the budget sending needs.",
            ),
        ),
        migrations.AlterField(
            model_name="plan",
            name="messages_per_minute",
            field=models.PositiveIntegerField(
                default=120, help_text="Sending: POST and other writes under /api/v1/messages."
            ),
        ),
        migrations.RunPython(scale, unscale),
    ]
