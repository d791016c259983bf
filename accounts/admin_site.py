"""The admin site, with its login throttled like the product's (accounts.views.login_throttled):
staff accounts read every knowledge base, so theirs is the password most worth guessing.

INSTALLED_APPS names `AdminConfig` here in place of "django.contrib.admin" (Django's way to
replace the default site), so this module is imported while the app registry is still being
built: nothing here may import models at import time."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig as BaseAdminConfig
from django.contrib.auth.decorators import login_not_required


class AdminSite(admin.AdminSite):
    @login_not_required
    def login(self, request, extra_context=None):
        from .views import login_throttled  # models are loaded by the time anyone logs in

        return login_throttled(super().login)(request, extra_context)


class AdminConfig(BaseAdminConfig):
    default_site = "accounts.admin_site.AdminSite"
