from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "openspark.core"
    label = "core"
    verbose_name = "OpenSpark core"
