from django.db import migrations

LAYERS = ("global", "ip", "plan", "endpoint")


def seed(apps, schema_editor):
    LayerPolicy = apps.get_model("throttling", "LayerPolicy")
    for layer in LAYERS:
        LayerPolicy.objects.get_or_create(layer=layer)


def unseed(apps, schema_editor):
    apps.get_model("throttling", "LayerPolicy").objects.filter(layer__in=LAYERS).delete()


class Migration(migrations.Migration):
    dependencies = [("throttling", "0003_limiter_rules_lists_alerts")]
    operations = [migrations.RunPython(seed, unseed)]
