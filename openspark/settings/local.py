"""Developer laptop / `make run`: embedded services, debug on."""

from .base import *  # noqa: F403
from .base import EMAIL_URL, STATIC_ROOT, env

DEBUG = env.bool("DEBUG", default=True)
if not EMAIL_URL:  # mail (verification links, notifications) is printed where you can read it
    EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing folder
