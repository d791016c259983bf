from django.db import migrations

from throttling.plans import DEFAULT_PLANS, seed_default_plans


def seed(apps, schema_editor):
    seed_default_plans(apps.get_model("throttling", "Plan"))


def unseed(apps, schema_editor):
    Plan = apps.get_model("throttling", "Plan")
    Plan.objects.filter(tier__in=[p[0] for p in DEFAULT_PLANS]).delete()


class Migration(migrations.Migration):
    dependencies = [("throttling", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
