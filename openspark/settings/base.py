"""Settings shared by every environment; values come from the environment (django-environ).

Embedded defaults are chosen when a URL variable is unset: SQLite for the database and an
embedded Redis / Milvus Lite started by the runner (`openspark.devstack`), which exports
REDIS_URL and MILVUS_URI for the processes it starts.
"""

import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

VAR_DIR = Path(env("OPENSPARK_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env("SECRET_KEY", default="dev-insecure-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "accounts.admin_site.AdminConfig",  # django.contrib.admin, its login throttled
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_results",
    "django_celery_beat",
    "openspark.core",
    "throttling",
    "accounts",
    "knowledge",
    "assistants",
    "conversations",
]

MIDDLEWARE = [
    # Outermost: counts every answer as the client gets it (429s and JSON errors included).
    "openspark.core.middleware.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "openspark.core.csp.ContentSecurityPolicyMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Outside CommonMiddleware (which refuses a bad Host with an HTML 400) and everything after
    # it, so every /api/v1/ answer has the JSON error shape; inside the two header middlewares.
    "openspark.core.middleware.ApiErrorMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "throttling.middleware.RateLimitMiddleware",
]

ROOT_URLCONF = "openspark.urls"
WSGI_APPLICATION = "openspark.wsgi.application"
ASGI_APPLICATION = "openspark.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# --- Database: SQLite (WAL) unless DATABASE_URL is set -------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'openspark.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # WAL lets the web server and the worker read while the other writes; the busy timeout
    # makes a writer wait for the lock instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Django's ASGI handler runs each request in a new thread, so a connection is per request;
    # opening a SQLite file is cheap.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and (
    DB_POOL_MAX_SIZE := env.int("DB_POOL_MAX_SIZE", default=10)
):
    # psycopg's pool per process: a worker streams 100+ replies on threads that each touch
    # the database briefly once a second; without a pool every touch is a PostgreSQL login
    # (a forked backend) and their peak exceeds max_connections. Threads past the pool's size
    # wait for a connection (DB_POOL_TIMEOUT s) instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": 1,
            "max_size": DB_POOL_MAX_SIZE,
            "timeout": env.float("DB_POOL_TIMEOUT", default=30.0),
        }
    }
    # Each connection the pool hands out is checked first (an empty query): one the server
    # dropped (a restart, a failover, pg_terminate_backend) is replaced instead of failing the
    # request that drew it.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Redis: cache, sessions, channel layer, Celery broker -----------------------------------
# The runner exports REDIS_URL for an embedded server; production sets it explicitly.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_KEY_PREFIX = env("REDIS_KEY_PREFIX", default="os")
# Socket timeout of Redis clients made by openspark.core.redis unless a caller sets its own.
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=5.0)

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 2,
            "SOCKET_TIMEOUT": 2,
            # A Redis outage must degrade caching, not break requests (issue: caching).
            "IGNORE_EXCEPTIONS": True,
        },
    }
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# Channels and groups are spread over CHANNEL_LAYER_REDIS_URLS by consistent hashing
# (channels-redis's own sharding: independent servers, no Redis Cluster), so the channel layer
# grows past one Redis by adding URLs (docs/operations.md, "Past one machine"). Every process
# must list the same servers in the same order. Default: the one REDIS_URL.
CHANNEL_LAYER_REDIS_URLS = env.list("CHANNEL_LAYER_REDIS_URLS", default=[REDIS_URL])
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py's asyncio pool raises MaxConnectionsError past max_connections (100
            # by default); one process with hundreds of sockets joining at once needs more.
            "hosts": [
                {
                    "address": url,
                    "max_connections": env.int("CHANNEL_LAYER_MAX_CONNECTIONS", default=1000),
                    # A socket's receive blocks in BZPOPMIN for 5 s; redis-py 8 times reads
                    # out after 5 s by default, which killed idle sockets. Longer than that.
                    "socket_timeout": env.float("CHANNEL_LAYER_SOCKET_TIMEOUT", default=15.0),
                }
                for url in CHANNEL_LAYER_REDIS_URLS
            ],
            "prefix": f"{REDIS_KEY_PREFIX}:asgi",
            "capacity": 1500,
            "expiry": 60,
        },
    }
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
if CELERY_BROKER_URL.startswith("redis://"):
    # kombu's Redis transport with the fix that keeps a worker alive when Redis goes away.
    CELERY_BROKER_TRANSPORT = "openspark.core.redis:BrokerTransport"
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_CACHE_BACKEND = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=15 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=14 * 60)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Three queues, so a CPU-heavy upload never delays a chat reply: `chat` (replies and titles:
# streaming, I/O-bound, a threads worker), `ingest` (parsing, splitting and embedding
# documents: a prefork worker whose children have hard time and memory limits), `default`
# (everything else: notifications, sweeps, warm-ups). One worker may consume all three.
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", default="default")
CHAT_TASK_QUEUE = env("CHAT_TASK_QUEUE", default="chat")
INGEST_TASK_QUEUE = env("INGEST_TASK_QUEUE", default="ingest")
# Task name → the setting that names its queue (unlisted tasks go to the default queue).
# openspark.celery.route_task reads it whenever a task is sent, so a queue renamed in the
# settings (by a test, say) applies to the next task; an empty queue name means the default.
TASK_QUEUE_SETTINGS = {
    "generate_ai_response": "CHAT_TASK_QUEUE",
    "generate_conversation_title": "CHAT_TASK_QUEUE",
    "vectorize_document": "INGEST_TASK_QUEUE",
    "update_knowledge_base": "INGEST_TASK_QUEUE",
}
CELERY_TASK_ROUTES = ("openspark.celery.route_task",)

# --- Metrics (Prometheus at /metrics; docs/operations.md) ------------------------------------
# prometheus_client's multiprocess mode reads PROMETHEUS_MULTIPROC_DIR from the environment
# itself (set before it is imported: the runner, the test settings and the Docker image set it).
# Every process of a machine writes its samples there and /metrics adds them up.
if _metrics_dir := env("PROMETHEUS_MULTIPROC_DIR", default=""):
    Path(_metrics_dir).mkdir(parents=True, exist_ok=True)
# Scrapers authenticate with `Authorization: Bearer <METRICS_TOKEN>` (empty: staff sessions only).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
# Collectors that read fleet-wide numbers at scrape time (the same ones the staff pages show).
METRICS_COLLECTORS = [
    "openspark.core.cache.metrics.CacheStatsCollector",
    "openspark.core.queues.QueueDepthCollector",
]
# A Celery worker on a host without a web server serves its own processes' metrics here
# (0: off). Unauthenticated: bind it to a private network only.
METRICS_WORKER_PORT = env.int("METRICS_WORKER_PORT", default=0)
METRICS_WORKER_ADDR = env("METRICS_WORKER_ADDR", default="127.0.0.1")

# --- Tasks: retries, records, dead letters (openspark/core/taskbase.py, docs/operations.md)
# Every product task retries what it retries with exponential backoff and full jitter:
# a random wait up to min(BACKOFF_MAX, BACKOFF x 2^retry) seconds, at most MAX_RETRIES times;
# then it is a dead letter (admin) that staff retry or discard.
TASK_MAX_RETRIES = env.int("TASK_MAX_RETRIES", default=5)
TASK_RETRY_BACKOFF = env.int("TASK_RETRY_BACKOFF", default=2)
TASK_RETRY_BACKOFF_MAX = env.int("TASK_RETRY_BACKOFF_MAX", default=600)
# Task records and their Celery results are deleted together, this many days after their last
# change (beat `tasks_expire`); Celery's own result cleanup is off so they never part.
TASK_RETENTION_DAYS = env.int("TASK_RETENTION_DAYS", default=7)
CELERY_RESULT_EXPIRES = None
# A task no worker reported on this long after it was queued (or, once started, this long
# past the hard time limit) reads `LOST`: above the broker's visibility timeout (1 h), so a
# redelivery gets its chance first.
TASK_LOST_AFTER_SECONDS = env.int("TASK_LOST_AFTER_SECONDS", default=2 * 3600)
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "tasks-expire": {"task": "tasks_expire", "schedule": 3600.0},
}
# An open page counts as present for this long without a refresh (its socket refreshes every
# third of it): "is a page open?" for notifications of replies that finished unseen.
PRESENCE_TTL_SECONDS = env.int("PRESENCE_TTL_SECONDS", default=60)

# --- Vector store ---------------------------------------------------------------------------
# Milvus Lite's gRPC server (started by the runner) or a Milvus server URL.
MILVUS_URI = env("MILVUS_URI", default="")
MILVUS_TOKEN = env("MILVUS_TOKEN", default="")
# gRPC channel options of every Milvus client (the vector store, the readiness check), over
# pymilvus' defaults. Keepalive pings only while a call is in flight: pymilvus also pings idle
# channels every 10 s, which Milvus Lite's server (gRPC's default policy: one ping per 5 min
# without calls) answers with GOAWAY "too_many_pings" after a minute or so of idling, and a
# call racing that GOAWAY fails (a 500 on knowledge/search under `make load`,
# docs/reliability.md). MILVUS_GRPC_OPTIONS (JSON) adds or overrides options.
MILVUS_GRPC_OPTIONS = {
    "grpc.keepalive_permit_without_calls": 0,
    **env.json("MILVUS_GRPC_OPTIONS", default={}),
}

# --- LLM providers (read lazily by openspark.llm.factory) ----------------------------------
LLM_PROVIDER = env("LLM_PROVIDER", default="auto")
ZHIPUAI_API_KEY = env("ZHIPUAI_API_KEY", default="")
ZHIPUAI_BASE_URL = env("ZHIPUAI_BASE_URL", default=None)
GLM_MODEL = env("GLM_MODEL", default="glm-4")
# The other GLM-4 variants an assistant may choose (with GLM_MODEL) when a Zhipu key is set.
GLM_MODELS = env.list(
    "GLM_MODELS", default=["glm-4-plus", "glm-4-air", "glm-4-airx", "glm-4-long", "glm-4-flash"]
)
OPENAI_COMPAT_BASE_URL = env("OPENAI_COMPAT_BASE_URL", default="")
OPENAI_COMPAT_MODEL = env("OPENAI_COMPAT_MODEL", default="glm-4-9b-chat")
# More models the OpenAI-compatible server serves, for assistants to choose from.
OPENAI_COMPAT_MODELS = env.list("OPENAI_COMPAT_MODELS", default=[])
OPENAI_COMPAT_API_KEY = env("OPENAI_COMPAT_API_KEY", default="")
LLM_REQUEST_TIMEOUT = env.float("LLM_REQUEST_TIMEOUT", default=60.0)
LLM_RETRY_MAX_ATTEMPTS = env.int("LLM_RETRY_MAX_ATTEMPTS", default=3)
LLM_RETRY_MAX_SECONDS = env.float("LLM_RETRY_MAX_SECONDS", default=60.0)

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"
# Login POSTs (the login page and the admin's) per client IP and per username; signups (and
# verification e-mails asked for again) per client IP and per address: "<count>/<s|m|h|d>".
LOGIN_RATE_LIMIT = env("LOGIN_RATE_LIMIT", default="10/m")
SIGNUP_RATE_LIMIT = env("SIGNUP_RATE_LIMIT", default="10/h")
# Checked here, so a typo stops the start instead of the first login.
for _name, _rate in (
    ("LOGIN_RATE_LIMIT", LOGIN_RATE_LIMIT),
    ("SIGNUP_RATE_LIMIT", SIGNUP_RATE_LIMIT),
):
    if not re.fullmatch(r"[1-9]\d*/\d*[smhd][a-z]*", _rate.replace(" ", "")):
        raise ImproperlyConfigured(f'{_name}={_rate!r}: expected "<count>/<s|m|h|d>", e.g. "10/m".')
# With Redis unreachable, "open": per-process buckets with the same limits keep counting (N
# processes admit up to N x the limit) and people can still log in; "closed": every login and
# signup is refused (503) until Redis is back. docs/security/accounts.md says which to pick.
LOGIN_THROTTLE_FAIL_MODE = env("LOGIN_THROTTLE_FAIL_MODE", default="open")
if LOGIN_THROTTLE_FAIL_MODE not in ("open", "closed"):
    raise ImproperlyConfigured('LOGIN_THROTTLE_FAIL_MODE must be "open" or "closed".')
# Signup needs an e-mail address and leaves the account inactive until the link mailed to it is
# followed (off here and in tests, on by default in production); links last this many seconds.
ACCOUNT_EMAIL_VERIFICATION = env.bool("ACCOUNT_EMAIL_VERIFICATION", default=False)
ACCOUNT_EMAIL_VERIFICATION_MAX_AGE = env.int(
    "ACCOUNT_EMAIL_VERIFICATION_MAX_AGE", default=3 * 24 * 3600
)

# --- i18n -----------------------------------------------------------------------------------
LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", _("Simplified Chinese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media -----------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Uploads: MEDIA_ROOT on this machine ("local", the embedded default), or an S3-compatible
# bucket ("s3": AWS S3, MinIO — compose's default) that every web and worker process on every
# machine reads. Code reads uploads through the storage API only (FieldFile.open, the
# `default` storage), never a path, so both behave the same (docs/operations.md).
MEDIA_STORAGE = env("MEDIA_STORAGE", default="local")
if MEDIA_STORAGE == "s3":
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env("AWS_STORAGE_BUCKET_NAME"),
            # Empty: AWS itself; MinIO and others: their URL (http://minio:9000).
            "endpoint_url": env("AWS_S3_ENDPOINT_URL", default="") or None,
            # Empty: boto3's own chain (instance role, ~/.aws, AWS_* variables).
            "access_key": env("AWS_ACCESS_KEY_ID", default="") or None,
            "secret_key": env("AWS_SECRET_ACCESS_KEY", default="") or None,
            "region_name": env("AWS_S3_REGION_NAME", default="") or None,
            # "path" suits MinIO and most S3-compatible servers; AWS takes either.
            "addressing_style": env("AWS_S3_ADDRESSING_STYLE", default="path"),
            "location": env("AWS_LOCATION", default=""),  # a key prefix inside the bucket
            # Private objects; a name already taken gets a suffix instead of replacing a file.
            "default_acl": None,
            "file_overwrite": False,
        },
    }
elif MEDIA_STORAGE != "local":
    raise ImproperlyConfigured('MEDIA_STORAGE must be "local" or "s3".')
WHITENOISE_USE_FINDERS = True
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Request bodies past this are refused with 413 as they arrive, before Django spools them
# (openspark/core/body_limit.py); below FILE_UPLOAD_MAX_MEMORY_SIZE, so they stay in memory.
REQUEST_BODY_MAX_BYTES = env.int("REQUEST_BODY_MAX_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = REQUEST_BODY_MAX_BYTES
# Views whose bodies may be a whole upload: KNOWLEDGE_MAX_FILES_PER_UPLOAD files of
# KNOWLEDGE_MAX_UPLOAD_BYTES plus this much for the multipart framing and form fields.
REQUEST_BODY_UPLOAD_VIEWS = ["knowledge-documents", "admin:knowledge_knowledgebase_upload"]
REQUEST_BODY_MULTIPART_OVERHEAD = env.int("REQUEST_BODY_MULTIPART_OVERHEAD", default=1024 * 1024)

# --- Content-Security-Policy (openspark/core/csp.py) ----------------------------------------
# On unless turned off (production: always on). Our own origin only, no inline script.
CSP_ENABLED = env.bool("CSP_ENABLED", default=True)
CSP_DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "font-src": "'self'",
    "connect-src": "'self'",  # websockets to our own host included
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

# --- Health ---------------------------------------------------------------------------------
# /readyz shows versions, errors and latencies only to staff and to callers presenting this
# token (`Authorization: Bearer <token>` or `X-Health-Token`); empty: to staff only.
HEALTH_TOKEN = env("HEALTH_TOKEN", default="")
# Everyone else gets ok/down per dependency, from a run at most this old (seconds).
READYZ_CACHE_SECONDS = env.float("READYZ_CACHE_SECONDS", default=1.0)

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "openspark.core.pagination.PageNumberPagination",
    "DEFAULT_THROTTLE_CLASSES": [
        "throttling.throttles.GlobalRateThrottle",
        "throttling.throttles.IpRateThrottle",
        "throttling.throttles.PlanRateThrottle",
        "throttling.throttles.EndpointGroupRateThrottle",
    ],
    "PAGE_SIZE": 20,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "openspark.core.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "openspark.core.schema.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "OpenSpark API",
    "DESCRIPTION": "Chat with GLM-4, knowledge bases with cited answers, limits and caches.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Every operation documents the errors it can answer (openspark/core/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "openspark.core.schema.error_responses",
    ],
    # Two `visibility` choice sets (knowledge bases, assistants): each its own named enum.
    "ENUM_NAME_OVERRIDES": {
        "KnowledgeBaseVisibilityEnum": "knowledge.models.KnowledgeBase.Visibility",
        "AssistantVisibilityEnum": "assistants.models.Assistant.Visibility",
        "EvaluationRunStatusEnum": "knowledge.models.EvaluationRun.Status",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- E-mail (notifications, signup verification links) ---------------------------------------
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = VAR_DIR / "mail"
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="OpenSpark <noreply@localhost>")
EMAIL_URL = env("EMAIL_URL", default="")
if EMAIL_URL:
    vars().update(env.email_url("EMAIL_URL"))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)  # seconds per SMTP operation
# The product's public address: links in notification e-mails (none when empty).
SITE_URL = env("SITE_URL", default="")

# --- Chat (conversations) -------------------------------------------------------------------
# Read lazily by conversations/ (getattr with the same defaults), so tests can override them.
CHAT_SYSTEM_PROMPT = env(
    "CHAT_SYSTEM_PROMPT",
    default="You are OpenSpark, a helpful assistant. Answer clearly and concisely.",
)
CHAT_HISTORY_TOKEN_BUDGET = env.int("CHAT_HISTORY_TOKEN_BUDGET", default=3000)
CHAT_HISTORY_MAX_MESSAGES = env.int("CHAT_HISTORY_MAX_MESSAGES", default=20)
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=8000)
CHAT_REPLY_MAX_TOKENS = env.int("CHAT_REPLY_MAX_TOKENS", default=0)  # 0: the model's default
# With CHAT_REPLY_MAX_TOKENS at 0: the completion tokens a reply reserves from a monthly token
# quota and is capped at (GLM-4's output maximum; a model with a smaller one needs less).
CHAT_QUOTA_REPLY_TOKENS = env.int("CHAT_QUOTA_REPLY_TOKENS", default=4095)
CHAT_DELTA_BATCH_SECONDS = env.float("CHAT_DELTA_BATCH_SECONDS", default=0.05)
# The batch window grows with the replies a worker process streams at once, up to this.
CHAT_DELTA_BATCH_MAX_SECONDS = env.float("CHAT_DELTA_BATCH_MAX_SECONDS", default=0.25)
CHAT_CHECKPOINT_SECONDS = env.float("CHAT_CHECKPOINT_SECONDS", default=1.0)
# The checkpoint interval grows like the batch window, up to this (well under the lease).
CHAT_CHECKPOINT_MAX_SECONDS = env.float("CHAT_CHECKPOINT_MAX_SECONDS", default=10.0)
CHAT_REPLY_LOG_TTL = env.int("CHAT_REPLY_LOG_TTL", default=600)
# A reply still `pending` after this long lost its task: the beat sweep queues it again.
CHAT_PENDING_REQUEUE_SECONDS = env.int("CHAT_PENDING_REQUEUE_SECONDS", default=300)
# How often beat runs that sweep (seconds). A reply whose worker died is failed within about
# CHAT_REPLY_LEASE_SECONDS plus this; the scale-out test sets both short.
CHAT_REPLIES_SWEEP_SECONDS = env.float("CHAT_REPLIES_SWEEP_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "chat-replies-sweep": {"task": "replies_sweep", "schedule": CHAT_REPLIES_SWEEP_SECONDS},
}
# Above LLM_REQUEST_TIMEOUT + LLM_RETRY_MAX_SECONDS: the lease is refreshed per batch only.
CHAT_REPLY_LEASE_SECONDS = env.int("CHAT_REPLY_LEASE_SECONDS", default=180)
CHAT_SSE_KEEPALIVE_SECONDS = env.float("CHAT_SSE_KEEPALIVE_SECONDS", default=15.0)

# --- Knowledge (RAG) ------------------------------------------------------------------------
KNOWLEDGE_MAX_UPLOAD_BYTES = env.int("KNOWLEDGE_MAX_UPLOAD_BYTES", default=20 * 1024 * 1024)
KNOWLEDGE_MAX_FILES_PER_UPLOAD = env.int("KNOWLEDGE_MAX_FILES_PER_UPLOAD", default=20)
KNOWLEDGE_ALLOWED_TYPES = env.list(
    "KNOWLEDGE_ALLOWED_TYPES", default=["pdf", "docx", "md", "html", "txt", "csv"]
)
# "auto": Zhipu embedding-3 when ZHIPUAI_API_KEY is set, else the local all-MiniLM-L6-v2.
KNOWLEDGE_EMBEDDER = env("KNOWLEDGE_EMBEDDER", default="auto")
# Workers load the local embedding model when they start rather than on the first upload.
KNOWLEDGE_WARM_EMBEDDER_ON_WORKER_START = env.bool(
    "KNOWLEDGE_WARM_EMBEDDER_ON_WORKER_START", default=True
)
KNOWLEDGE_EMBED_BATCH_SIZE = env.int("KNOWLEDGE_EMBED_BATCH_SIZE", default=64)
# The local model's arithmetic (auto, fp32, int8, bf16): "auto" is bf16 where the CPU has
# AMX, else int8 (docs/knowledge.md, "Local model precision").
KNOWLEDGE_LOCAL_EMBED_PRECISION = env("KNOWLEDGE_LOCAL_EMBED_PRECISION", default="auto")
# Where the int8 model made from the shipped weights is kept (made once per machine, ~30 s;
# `manage.py build_local_model`). Not under VAR_DIR: every run and test of a checkout shares it.
KNOWLEDGE_LOCAL_MODEL_DIR = Path(
    env("KNOWLEDGE_LOCAL_MODEL_DIR", default=str(BASE_DIR / "var" / "models"))
)
# Batches the local model runs side by side, one core each; 0 = one per available core.
KNOWLEDGE_LOCAL_EMBED_LANES = env.int("KNOWLEDGE_LOCAL_EMBED_LANES", default=0)
# Word pieces the local model reads per text (the rest of a longer chunk is cut off).
KNOWLEDGE_LOCAL_EMBED_MAX_TOKENS = env.int("KNOWLEDGE_LOCAL_EMBED_MAX_TOKENS", default=128)
KNOWLEDGE_REMOTE_EMBED_CONCURRENCY = env.int("KNOWLEDGE_REMOTE_EMBED_CONCURRENCY", default=4)
KNOWLEDGE_CHUNK_SIZE = env.int("KNOWLEDGE_CHUNK_SIZE", default=500)
KNOWLEDGE_CHUNK_OVERLAP = env.int("KNOWLEDGE_CHUNK_OVERLAP", default=50)
KNOWLEDGE_TOP_K = env.int("KNOWLEDGE_TOP_K", default=5)
KNOWLEDGE_CONTEXT_TOKEN_BUDGET = env.int("KNOWLEDGE_CONTEXT_TOKEN_BUDGET", default=3000)
KNOWLEDGE_COLLECTION_PREFIX = env("KNOWLEDGE_COLLECTION_PREFIX", default="openspark_chunks")
# Milvus Lite: written vectors are sealed into an indexed segment when the ingest queue runs
# dry, or at the latest this many seconds after a process last wrote (knowledge/vectorstore.py).
KNOWLEDGE_VECTOR_SEAL_DELAY = env.float("KNOWLEDGE_VECTOR_SEAL_DELAY", default=30.0)
KNOWLEDGE_STUCK_AFTER_SECONDS = env.int("KNOWLEDGE_STUCK_AFTER_SECONDS", default=30 * 60)
# Limits of the ingest worker (docs/security/ingest.md). A document's run is stopped after
# KNOWLEDGE_INGEST_TIME_LIMIT seconds (read where the task is sent, web or worker; enforced by
# prefork pools only; keep it well under KNOWLEDGE_STUCK_AFTER_SECONDS), a prefork child
# cannot allocate more than KNOWLEDGE_INGEST_MEMORY_LIMIT_MB (embedding model included; 0: no
# limit), and a document whose runs were cut short KNOWLEDGE_INGEST_MAX_ATTEMPTS times in a
# row is failed.
KNOWLEDGE_INGEST_TIME_LIMIT = env.int("KNOWLEDGE_INGEST_TIME_LIMIT", default=10 * 60)
KNOWLEDGE_INGEST_MEMORY_LIMIT_MB = env.int("KNOWLEDGE_INGEST_MEMORY_LIMIT_MB", default=2048)
KNOWLEDGE_INGEST_MAX_ATTEMPTS = env.int("KNOWLEDGE_INGEST_MAX_ATTEMPTS", default=3)
# Retrieval evaluation (staff): a question file's size and questions (docs/knowledge.md). The
# file travels in one request body, so keep it under REQUEST_BODY_MAX_BYTES with room for the
# multipart framing.
KNOWLEDGE_EVAL_MAX_UPLOAD_BYTES = env.int("KNOWLEDGE_EVAL_MAX_UPLOAD_BYTES", default=512 * 1024)
KNOWLEDGE_EVAL_MAX_QUESTIONS = env.int("KNOWLEDGE_EVAL_MAX_QUESTIONS", default=500)
# A prefork child that ends a task holding more than three quarters of the memory limit is
# replaced, so the next document starts with room (KiB, resident memory).
CELERY_WORKER_MAX_MEMORY_PER_CHILD = KNOWLEDGE_INGEST_MEMORY_LIMIT_MB * 1024 * 3 // 4 or None
# Merged, not assigned: other apps' blocks add their own periodic tasks to the same setting.
# How often beat runs the knowledge sweep (seconds): a document whose worker died is queued
# again within about KNOWLEDGE_STUCK_AFTER_SECONDS plus this.
KNOWLEDGE_SWEEP_SECONDS = env.float("KNOWLEDGE_SWEEP_SECONDS", default=10 * 60.0)
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "knowledge-sweep": {"task": "knowledge_sweep", "schedule": KNOWLEDGE_SWEEP_SECONDS},
}

# --- Throttling -----------------------------------------------------------------------------
# Defaults for the limiter (throttling/); staff override limits, algorithms, shadow and fail
# modes per layer in the admin (Layer policies). Read lazily, so tests may override them.
THROTTLE_GLOBAL_LIMIT = env.int("THROTTLE_GLOBAL_LIMIT", default=10_000)  # requests/min
THROTTLE_IP_LIMIT = env.int("THROTTLE_IP_LIMIT", default=200)  # requests/min, no identity
# Networks (CIDRs) of the reverse proxies in front of the app. X-Forwarded-For is read only
# from a peer in one of them (throttling/identity.py); empty = trust only the socket peer, so
# a client cannot pick its own IP with a forged header.
THROTTLE_TRUSTED_PROXIES = env.list("THROTTLE_TRUSTED_PROXIES", default=[])
THROTTLE_REDIS_TIMEOUT = env.float("THROTTLE_REDIS_TIMEOUT", default=0.25)  # seconds
THROTTLE_REDIS_RETRY_SECONDS = env.float("THROTTLE_REDIS_RETRY_SECONDS", default=1.0)
THROTTLE_CONFIG_TTL = env.float("THROTTLE_CONFIG_TTL", default=2.0)  # admin edits apply within
THROTTLE_NEAR_LIMIT_RATIO = 0.1  # "near the limit" = less than 10% of the budget left
THROTTLE_ALERT_DEDUP_SECONDS = env.int("THROTTLE_ALERT_DEDUP_SECONDS", default=300)
THROTTLE_ALERT_DENY_MIN = env.int("THROTTLE_ALERT_DENY_MIN", default=100)  # per process, minute
THROTTLE_ALERT_DENY_RATIO = env.float("THROTTLE_ALERT_DENY_RATIO", default=0.5)

# --- Caching --------------------------------------------------------------------------------
# Read lazily by openspark.core.cache. TTLs are the plan's numbers (seconds); each can be
# overridden with CACHE_TTL_<NAMESPACE>. `rate_limit` documents the limiter's own window keys.
CACHE_ENABLED = env.bool("CACHE_ENABLED", default=True)
CACHE_TTLS = {
    namespace: env.int(f"CACHE_TTL_{namespace.upper()}", default=seconds)
    for namespace, seconds in {
        "user_profile": 60 * 60,
        "user_conversations": 10 * 60,
        "conversation_history": 30 * 60,
        "document_content": 60 * 60,
        "ai_response": 24 * 60 * 60,
        "retrieval": 10 * 60,
        "rate_limit": 60,
        # Not in the plan: API-key authentication (invalidated by every key or user write).
        "api_key": 60 * 60,
    }.items()
}
CACHE_COMPRESS_MIN_BYTES = env.int("CACHE_COMPRESS_MIN_BYTES", default=1024)
# How long one process may hold a key's compute lock before another takes over.
CACHE_LOCK_TIMEOUT = env.float("CACHE_LOCK_TIMEOUT", default=10.0)
# Socket timeout of the cache's Redis calls (seconds).
CACHE_REDIS_TIMEOUT = env.float("CACHE_REDIS_TIMEOUT", default=2.0)
# After a Redis failure, skip Redis for this long (requests go straight to the database).
CACHE_REDIS_RETRY_SECONDS = env.float("CACHE_REDIS_RETRY_SECONDS", default=5.0)
# Warm-up hooks (dotted paths): user warmers take (*, user), document warmers (*, document_ids).
CACHE_USER_WARMERS = ["accounts.selectors.user_profile_warm"]
CACHE_DOCUMENT_WARMERS = ["knowledge.selectors.document_content_warm"]
CACHE_WARM_HOT_DOCUMENTS = env.int("CACHE_WARM_HOT_DOCUMENTS", default=50)
CELERY_BEAT_SCHEDULE = {
    **globals().get("CELERY_BEAT_SCHEDULE", {}),
    "cache-warm-hot-documents": {"task": "cache_warm_hot_documents", "schedule": 15 * 60.0},
}
