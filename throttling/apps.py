from django.apps import AppConfig


class ThrottlingConfig(AppConfig):
    name = "throttling"
    verbose_name = "Plans and limits"

    def ready(self) -> None:
        from django.contrib import admin

        from . import (
            dashboard,
            signals,  # noqa: F401 - connects the limiter-config invalidation
        )

        dashboard.install(admin.site)
