"""Production: secrets and service URLs must come from the environment — no defaults; HTTPS
only (secure cookies, HSTS, redirect to https), the Content-Security-Policy always on.
`manage.py check --deploy` is clean with these (tests/test_deploy.py)."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env

_REQUIRED = ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL")
_missing = [name for name in _REQUIRED if not env.str(name, default="")]
if _missing:
    raise ImproperlyConfigured(
        "Production settings refuse to start without: " + ", ".join(_missing)
    )

DEBUG = False
SECRET_KEY = env("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

# --- HTTPS ----------------------------------------------------------------------------------
# Behind a proxy that terminates TLS, Django sees plain HTTP: set SECURE_PROXY_SSL_HEADER to
# the header and value the proxy sends for https (`HTTP_X_FORWARDED_PROTO,https`), and only
# when that proxy is the only way to the app and always sets the header (docker-compose.yml:
# the app's port is not published; Caddy sets X-Forwarded-Proto). Unset: no header trusted.
if env("SECURE_PROXY_SSL_HEADER", default=""):
    SECURE_PROXY_SSL_HEADER = tuple(env.list("SECURE_PROXY_SSL_HEADER"))
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Container healthchecks ask the app's own port over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Browsers remember "https only" this long (a year); a first deployment unsure of its HTTPS
# may start lower (e.g. 3600): the value cannot be taken back before it runs out.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Asking browsers to preload the domain is a decision to submit it to their lists, which is
# slow to undo: off unless the operator makes it, hence check --deploy's reminder silenced.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Signup e-mail verification is on unless turned off, and then its links must be deliverable.
ACCOUNT_EMAIL_VERIFICATION = env.bool("ACCOUNT_EMAIL_VERIFICATION", default=True)
if ACCOUNT_EMAIL_VERIFICATION and not env.str("EMAIL_URL", default=""):
    raise ImproperlyConfigured(
        "Production settings refuse to start without: EMAIL_URL (signup e-mail verification "
        "is on; set ACCOUNT_EMAIL_VERIFICATION=false to sign people up without it)"
    )

CSP_ENABLED = True
