from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "openspark.core"
    label = "core"
    verbose_name = "OpenSpark core"

    def ready(self) -> None:
        from django.contrib import admin
        from django.urls import register_converter

        from .ids import IdConverter

        register_converter(IdConverter, "id")

        from .cache import admin as cache_admin
        from .cache import receivers, tasks  # noqa: F401 - registers the cache tasks
        from .metrics import task_signals_connect

        receivers.connect()
        task_signals_connect()
        cache_admin.install(admin.site)
