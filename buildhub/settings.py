"""BuildHub settings.

With no environment at all this runs on one machine with no services installed (the
embedded default): SQLite under var/, a private Redis on a unix socket under var/run/
(started by ``manage.py runlocal``) and files under var/storage/. Production is switched on
with ``BUILDHUB_ENV=production`` and configured through the variables listed in README.md.
"""

import os
import secrets
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from buildhub.env import database_from_url, env_bool, env_int, env_list, env_str
from buildhub.storage import s3_storages

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("BUILDHUB_VAR_DIR") or BASE_DIR / "var").resolve()

BUILDHUB_ENV = env_str("BUILDHUB_ENV", "development")
if BUILDHUB_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(
        f"BUILDHUB_ENV must be 'development' or 'production', got {BUILDHUB_ENV!r}"
    )
PRODUCTION = BUILDHUB_ENV == "production"
DEBUG = env_bool("DEBUG", False)


def _local_secret_key() -> str:
    """A key generated once per checkout, so sessions survive restarts of the local server."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(64))
    return path.read_text().strip()


if PRODUCTION:
    SECRET_KEY = env_str("SECRET_KEY")
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured(
            "Production needs SECRET_KEY: at least 50 random characters from the environment"
        )
    for required in ("DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"):
        if not env_str(required):
            raise ImproperlyConfigured(f"Production needs {required} in the environment")
else:
    SECRET_KEY = env_str("SECRET_KEY") or _local_secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "builds",
    "publishing",
    "buildevents",
    "abuse",
]

MIDDLEWARE = [
    "buildhub.metrics.RequestMetricsMiddleware",
    "buildhub.logs.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "buildhub.middleware.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "buildhub.security.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "buildhub.urls"
ASGI_APPLICATION = "buildhub.asgi.application"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": database_from_url(DATABASE_URL, conn_max_age=env_int("CONN_MAX_AGE", 60))
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": Path(env_str("BUILDHUB_SQLITE_PATH") or VAR_DIR / "buildhub.sqlite3"),
            "OPTIONS": {
                # WAL lets readers and the one writer work at once; IMMEDIATE takes the write
                # lock when a transaction starts, so concurrent writers wait instead of failing.
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                ),
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            "TEST": {"NAME": VAR_DIR / "test.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# A pooler in transaction mode (PgBouncer's pool_mode=transaction) hands each transaction
# to whichever server connection is free, so nothing may outlive a transaction on the
# server: no holdable cursors (QuerySet.iterator() reads in chunks instead) and, unless
# JOB_PREPARED_STATEMENTS says otherwise, no prepared statements. "session" or "" (none):
# each client keeps its server connection, as without a pooler.
DATABASE_POOLER = env_str("DATABASE_POOLER").lower()
if DATABASE_POOLER not in {"", "session", "transaction"}:
    raise ImproperlyConfigured(
        f"DATABASE_POOLER must be transaction, session or empty, got {DATABASE_POOLER!r}"
    )
TRANSACTION_POOLER = DATABASE_POOLER == "transaction"
if TRANSACTION_POOLER:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True

# --- Redis: django-q2 broker, Channels layer, cache, rate limits ------------------------
EMBEDDED_REDIS_SOCKET = VAR_DIR / "run" / "redis.sock"
REDIS_URL = env_str("REDIS_URL") or f"unix://{EMBEDDED_REDIS_SOCKET}"
USES_EMBEDDED_REDIS = not env_str("REDIS_URL")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "buildhub",
        "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # Live progress: redis-py 8 reads with a 5 s socket timeout by default, as long
            # as the layer's blocking BZPOPMIN waits, which breaks idle websockets; allow more.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
            "prefix": "buildhub:ws",
        },
    }
}

Q_CLUSTER: dict[str, Any] = {
    "name": "buildhub",
    "workers": env_int("BUILDHUB_WORKERS", 2),
    "redis": REDIS_URL,
    # A job's own timeout is enforced by the engine; this only stops a stuck ticket handler.
    "timeout": 3600,
    "retry": 3660,
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 1000,
    "ack_failures": True,
    "label": "Task queue",
}

# --- Job engine -------------------------------------------------------------------------
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 30)
JOB_HEARTBEAT_SECONDS = env_int("JOB_HEARTBEAT_SECONDS", 10)
JOB_POLL_SECONDS = float(env_str("JOB_POLL_SECONDS", "0.5"))  # cancel/drain checks
JOB_RETRY_BASE_SECONDS = env_int("JOB_RETRY_BASE_SECONDS", 30)
JOB_KILL_GRACE_SECONDS = env_int("JOB_KILL_GRACE_SECONDS", 10)
WORKER_DRAIN_GRACE_SECONDS = env_int("WORKER_DRAIN_GRACE_SECONDS", 25)
WORKER_IDLE_SECONDS = env_int("WORKER_IDLE_SECONDS", 600)  # scale to zero after this
REAPER_INTERVAL_SECONDS = env_int("REAPER_INTERVAL_SECONDS", 15)
RECONCILE_INTERVAL_SECONDS = env_int("RECONCILE_INTERVAL_SECONDS", 5)
JOB_WORKSPACE_ROOT = env_str("JOB_WORKSPACE_ROOT")  # default: /dev/shm when writable, else tmp
DIAGNOSTIC_MARKER_DIR = Path(env_str("DIAGNOSTIC_MARKER_DIR") or VAR_DIR / "diagnostic")

# --- Job engine: throughput -------------------------------------------------------------
# A ticket's process keeps claiming after each job, while jobs are eligible, for this long
# (then it sends a ticket on); well below Q_CLUSTER["timeout"], which would kill it. 0: one
# job per ticket.
JOB_DRAIN_SECONDS = float(env_str("JOB_DRAIN_SECONDS", "30"))
# PostgreSQL: the claim and the finish run as prepared statements on each connection (parsed
# and planned once). Off by default behind a transaction pooler: PgBouncer keeps them only
# from 1.21 on, with max_prepared_statements set (then JOB_PREPARED_STATEMENTS=true).
JOB_PREPARED_STATEMENTS = env_bool("JOB_PREPARED_STATEMENTS", not TRANSACTION_POOLER)

RATELIMIT_USE_CACHE = "default"
API_RATE_LIMIT = env_str("API_RATE_LIMIT", "600/m")
# How often the dashboard websocket re-reads the numbers (sent only when they change).
DASHBOARD_REFRESH_SECONDS = env_int("DASHBOARD_REFRESH_SECONDS", 2)

# --- Jobs API and queue insight ---------------------------------------------------------
# Per-account budgets (django-ratelimit syntax: count/period, e.g. 120/5m), on top of the
# per-token API_RATE_LIMIT: submit and run-now share one, list, detail and logs the other.
JOBS_SUBMIT_RATE = env_str("JOBS_SUBMIT_RATE", "10/h")
JOBS_READ_RATE = env_str("JOBS_READ_RATE", "120/5m")
JOB_ETA_SAMPLE = env_int("JOB_ETA_SAMPLE", 20)  # recent succeeded jobs of a kind for the ETA
JOB_LOGS_PAGE_LINES = env_int("JOB_LOGS_PAGE_LINES", 1000)  # log lines per logs request
# Retention (builds.retention): finished jobs older than JOB_RETENTION_DAYS (0: kept forever)
# are written with their logs to the private storage as gzipped JSON lines (unless
# JOB_ARCHIVE is off), then deleted, JOB_RETENTION_BATCH jobs per transaction; the worker
# supervisor sweeps every JOB_RETENTION_INTERVAL_SECONDS for at most
# JOB_RETENTION_RUN_SECONDS (the rest waits for its next sweep). Device check-in rows and
# hourly counters older than CHECKIN_RETENTION_DAYS go too (never inside the health window).
JOB_RETENTION_DAYS = env_int("JOB_RETENTION_DAYS", 90)
JOB_ARCHIVE = env_bool("JOB_ARCHIVE", True)
JOB_RETENTION_BATCH = env_int("JOB_RETENTION_BATCH", 500)
JOB_RETENTION_INTERVAL_SECONDS = env_int("JOB_RETENTION_INTERVAL_SECONDS", 600)
JOB_RETENTION_RUN_SECONDS = env_int("JOB_RETENTION_RUN_SECONDS", 60)
CHECKIN_RETENTION_DAYS = env_int("CHECKIN_RETENTION_DAYS", 30)

# --- Storage ----------------------------------------------------------------------------
STORAGE_ROOT = VAR_DIR / "storage"
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
AWS_PRIVATE_STORAGE_BUCKET_NAME = env_str("AWS_PRIVATE_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    if not AWS_PRIVATE_STORAGE_BUCKET_NAME:
        raise ImproperlyConfigured(
            "AWS_STORAGE_BUCKET_NAME is set: AWS_PRIVATE_STORAGE_BUCKET_NAME must name the "
            "private bucket for sourcemaps"
        )
    _s3 = s3_storages(
        public_bucket=AWS_STORAGE_BUCKET_NAME,
        private_bucket=AWS_PRIVATE_STORAGE_BUCKET_NAME,
        endpoint_url=env_str("AWS_S3_ENDPOINT_URL") or None,
        region_name=env_str("AWS_S3_REGION_NAME") or None,
        signed_url_seconds=env_int("SIGNED_URL_SECONDS", 3600),
    )
    _public_storage, _private_storage = _s3["default"], _s3["private"]
else:
    _public_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": STORAGE_ROOT / "public", "base_url": "/media/public/"},
    }
    _private_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": STORAGE_ROOT / "private", "base_url": None},
    }

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing one
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": _public_storage,
    "private": _private_storage,
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

# --- Publishing -------------------------------------------------------------------------
SECRETS_ENCRYPTION_KEY = env_str("SECRETS_ENCRYPTION_KEY")  # Fernet key; default: from SECRET_KEY
ARTIFACT_TTL_DAYS = env_int("ARTIFACT_TTL_DAYS", 30)
SOURCE_TTL_DAYS = env_int("SOURCE_TTL_DAYS", 7)
# How long the form of a direct upload to the bucket (S3 storage) can be used.
SOURCE_DIRECT_UPLOAD_SECONDS = env_int("SOURCE_DIRECT_UPLOAD_SECONDS", 3600)
# How often the supervisor deletes expired artifact files and source uploads.
STORAGE_SWEEP_INTERVAL_SECONDS = env_int("STORAGE_SWEEP_INTERVAL_SECONDS", 3600)
SIGNED_URL_SECONDS = env_int("SIGNED_URL_SECONDS", 3600)
UPDATE_CHECK_CACHE_SECONDS = env_int("UPDATE_CHECK_CACHE_SECONDS", 300)
# How long a web process answers update checks from what it remembers before asking Redis
# again; a publish or rollback reaches the other web processes within this time (0: never).
UPDATE_CHECK_EDGE_SECONDS = env_int("UPDATE_CHECK_EDGE_SECONDS", 1)
# Device check-ins (publishing.checkins) are kept in each web process's memory and written in
# batches every CHECKIN_FLUSH_SECONDS (0: only when flushed explicitly, as the tests do) or
# once CHECKIN_BATCH_SIZE wait; past CHECKIN_MAX_BUFFERED (database unreachable) the oldest
# are dropped. Adoption counts the devices seen in the last RELEASE_HEALTH_WINDOW_DAYS.
CHECKIN_FLUSH_SECONDS = float(env_str("CHECKIN_FLUSH_SECONDS", "2"))
CHECKIN_BATCH_SIZE = env_int("CHECKIN_BATCH_SIZE", 5000)
CHECKIN_MAX_BUFFERED = env_int("CHECKIN_MAX_BUFFERED", 200_000)
RELEASE_HEALTH_WINDOW_DAYS = env_int("RELEASE_HEALTH_WINDOW_DAYS", 7)
# Device endpoints (update checks of the three protocols, registration, reports, downloads):
# requests per fixed window for one app (all its devices, whichever protocol) and for one
# client address (all apps), then 429 with Retry-After (publishing.device_limits). Sized
# so a real fleet never meets them:
# - per app: a 10-million-device app whose devices each launch it 10 times a day makes
#   ~1,200 checks/s on average, ~6,000/s at a 5x busiest hour; a million devices all opening
#   the app within two minutes of a push is 500,000/min. 600,000/min (10,000/s) holds both,
#   and still stops a client bug that checks in a loop across a fleet.
# - per address: a carrier-grade NAT can put ~10,000 phones behind one public address;
#   each opening BuildHub-served apps 60 times in its busiest hour (a check, and at times
#   a registration or a download, each) is ~10,000/min. 12,000/min (200/s) leaves room and
#   still stops one client hammering.
DEVICE_RATE_PER_APP = env_str("DEVICE_RATE_PER_APP", "600000/m")
DEVICE_RATE_PER_IP = env_str("DEVICE_RATE_PER_IP", "12000/m")

# --- Source intake and store builds -------------------------------------------------------
# Caps on what one uploaded archive may unpack to (zip bombs are stopped while streaming).
SOURCE_MAX_UNPACKED_MB = env_int("SOURCE_MAX_UNPACKED_MB", 1024)
SOURCE_MAX_FILES = env_int("SOURCE_MAX_FILES", 50000)
# Git sources: the URL schemes builds may clone from, and whether hosts on loopback or
# private networks are allowed (off: a build cannot reach the service's own network).
SOURCE_GIT_PROTOCOLS = env_list("SOURCE_GIT_PROTOCOLS", ["https", "ssh"])
SOURCE_GIT_ALLOW_PRIVATE_HOSTS = env_bool("SOURCE_GIT_ALLOW_PRIVATE_HOSTS", False)
# Store build tools, looked up on the worker's PATH unless given as paths.
EAS_CLI = env_str("EAS_CLI", "eas")
FLUTTER_CLI = env_str("FLUTTER_CLI", "flutter")

# --- OTA builds (Metro + Hermes) -------------------------------------------------------
# The pinned fallback tool chain (`make toolchain`) for apps that carry no Metro or hermesc.
OTA_TOOLCHAIN_DIR = Path(env_str("OTA_TOOLCHAIN_DIR") or BASE_DIR / "toolchain")
OTA_NODE = env_str("OTA_NODE", "node")
OTA_NPM = env_str("OTA_NPM", "npm")
# npm's content-addressed package cache, shared (written only by npm itself, scripts off);
# Metro's transform caches, one folder per account below OTA_METRO_CACHE_DIR.
OTA_NPM_CACHE_DIR = Path(env_str("OTA_NPM_CACHE_DIR") or VAR_DIR / "cache" / "npm")
OTA_METRO_CACHE_DIR = Path(env_str("OTA_METRO_CACHE_DIR") or VAR_DIR / "cache" / "metro")
# Builds run in reusable directories (same path, warm Metro cache); default: under the
# job workspace root. OTA_BUILD_SLOTS bounds how many run at once on one machine.
OTA_BUILD_ROOT = env_str("OTA_BUILD_ROOT")
OTA_BUILD_SLOTS = env_int("OTA_BUILD_SLOTS", 32)
# --- Build sandbox ----------------------------------------------------------------------
# Every step that runs a customer's code (Metro, Babel, hermesc, npm, git, eas, flutter, the
# archive extraction) runs under bubblewrap: its own PID/IPC/UTS/network namespaces, a mount
# view where the job's workspace is the only writable place, an allow-listed environment,
# rlimits and an unprivileged user. `off` runs steps as plain children (single-tenant only).
BUILD_SANDBOX = env_str("BUILD_SANDBOX", "bwrap")
if BUILD_SANDBOX not in {"bwrap", "off"}:
    raise ImproperlyConfigured(f"BUILD_SANDBOX must be 'bwrap' or 'off', got {BUILD_SANDBOX!r}")
BUILD_SANDBOX_UNSAFE_OK = env_bool("BUILD_SANDBOX_UNSAFE_OK", False)
BUILD_SANDBOX_BWRAP = env_str("BUILD_SANDBOX_BWRAP", "bwrap")
# Limits of each sandboxed step (rlimits, per process; processes count per sandbox user).
BUILD_SANDBOX_MAX_PROCESSES = env_int("BUILD_SANDBOX_MAX_PROCESSES", 512)
BUILD_SANDBOX_MEMORY_MB = env_int("BUILD_SANDBOX_MEMORY_MB", 4096)
BUILD_SANDBOX_OPEN_FILES = env_int("BUILD_SANDBOX_OPEN_FILES", 8192)
BUILD_SANDBOX_FILE_SIZE_MB = env_int("BUILD_SANDBOX_FILE_SIZE_MB", 2048)
BUILD_SANDBOX_CPU_SECONDS = env_int("BUILD_SANDBOX_CPU_SECONDS", 1800)
# A worker running as root gives each job a user of its own from this range.
BUILD_SANDBOX_UID_BASE = env_int("BUILD_SANDBOX_UID_BASE", 200000)
BUILD_SANDBOX_UID_COUNT = env_int("BUILD_SANDBOX_UID_COUNT", 65536)
# Extra read-only paths a step may see (an Android SDK, a JDK): comma-separated.
BUILD_SANDBOX_READONLY_PATHS = env_list("BUILD_SANDBOX_READONLY_PATHS", [])
# Variables of the worker's own environment its steps get too (a CA bundle, a proxy):
# nothing by default; never name one that holds a secret of the service.
BUILD_SANDBOX_PASS_ENV = env_list("BUILD_SANDBOX_PASS_ENV", [])
# npm registries: hosts the operator trusts without the address check (a mirror on a private
# network, the public registry behind a proxy), and whether http:// registries are allowed.
NPM_TRUSTED_REGISTRY_HOSTS = env_list("NPM_TRUSTED_REGISTRY_HOSTS", ["registry.npmjs.org"])
NPM_ALLOW_HTTP_REGISTRIES = env_bool("NPM_ALLOW_HTTP_REGISTRIES", False)
# Each account's Metro transform cache is capped; the supervisor evicts least recently used
# account caches past the total.
BUILD_CACHE_MAX_MB_PER_ACCOUNT = env_int("BUILD_CACHE_MAX_MB_PER_ACCOUNT", 1024)
BUILD_CACHE_MAX_MB = env_int("BUILD_CACHE_MAX_MB", 20480)
BUILD_CACHE_SWEEP_INTERVAL_SECONDS = env_int("BUILD_CACHE_SWEEP_INTERVAL_SECONDS", 600)

# --- Build events -----------------------------------------------------------------------
# A running build with no event for this long is stale (status endpoint, banner, sweeper).
BUILD_EVENTS_HEARTBEAT_TIMEOUT_SECONDS = env_int("BUILD_EVENTS_HEARTBEAT_TIMEOUT_SECONDS", 90)
BUILD_EVENTS_SWEEP_INTERVAL_SECONDS = env_int("BUILD_EVENTS_SWEEP_INTERVAL_SECONDS", 30)
# A stale run stays in the admin banner until it has been silent this long.
BUILD_EVENTS_STALE_VISIBLE_SECONDS = env_int("BUILD_EVENTS_STALE_VISIBLE_SECONDS", 3600)
BUILD_EVENTS_RATE_LIMIT = env_str("BUILD_EVENTS_RATE_LIMIT", "1200/m")  # per token
BUILD_EVENTS_MAX_BODY_BYTES = env_int("BUILD_EVENTS_MAX_BODY_BYTES", 1024 * 1024)
BUILD_EVENTS_MAX_BATCH = env_int("BUILD_EVENTS_MAX_BATCH", 1000)
BUILD_WEBHOOK_TIMEOUT_SECONDS = env_int("BUILD_WEBHOOK_TIMEOUT_SECONDS", 5)
BUILD_WEBHOOK_MAX_ATTEMPTS = env_int("BUILD_WEBHOOK_MAX_ATTEMPTS", 6)
BUILD_WEBHOOK_RETRY_BASE_SECONDS = env_int("BUILD_WEBHOOK_RETRY_BASE_SECONDS", 30)
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "BuildHub <buildhub@localhost>")
# --- Abuse detection --------------------------------------------------------------------
# Points each rule adds to an account's score, and the thresholds that flag (> FLAG) and,
# for patterns a reviewer confirmed, block (> BLOCK). Boundaries are exclusive.
ABUSE_POINTS_SHARED_BUNDLE = env_int("ABUSE_POINTS_SHARED_BUNDLE", 30)
ABUSE_POINTS_SHARED_IP = env_int("ABUSE_POINTS_SHARED_IP", 20)
ABUSE_POINTS_SIMILAR_APP_NAME = env_int("ABUSE_POINTS_SIMILAR_APP_NAME", 10)
ABUSE_POINTS_SAME_DAY_ACCOUNTS = env_int("ABUSE_POINTS_SAME_DAY_ACCOUNTS", 15)
ABUSE_POINTS_BUILD_BURST = env_int("ABUSE_POINTS_BUILD_BURST", 10)
ABUSE_FLAG_THRESHOLD = env_int("ABUSE_FLAG_THRESHOLD", 50)
ABUSE_BLOCK_THRESHOLD = env_int("ABUSE_BLOCK_THRESHOLD", 80)
# Shared bundle: the same hash built by more than this many accounts within the window.
ABUSE_BUNDLE_MIN_ACCOUNTS = env_int("ABUSE_BUNDLE_MIN_ACCOUNTS", 3)
ABUSE_BUNDLE_WINDOW_DAYS = env_int("ABUSE_BUNDLE_WINDOW_DAYS", 30)
ABUSE_IP_WINDOW_DAYS = env_int("ABUSE_IP_WINDOW_DAYS", 7)
ABUSE_APP_NAME_WINDOW_DAYS = env_int("ABUSE_APP_NAME_WINDOW_DAYS", 30)
# Normalised app names at least this similar (difflib ratio, in percent) link two accounts.
ABUSE_APP_NAME_SIMILARITY_PERCENT = env_int("ABUSE_APP_NAME_SIMILARITY_PERCENT", 85)
# Build burst: at least N submissions within M minutes from the account and those it links to.
ABUSE_BURST_BUILDS = env_int("ABUSE_BURST_BUILDS", 5)
ABUSE_BURST_MINUTES = env_int("ABUSE_BURST_MINUTES", 10)
# IP addresses in abuse signals (and confirmed IP patterns) are removed after this many days.
ABUSE_IP_RETENTION_DAYS = env_int("ABUSE_IP_RETENTION_DAYS", 30)
ABUSE_PURGE_INTERVAL_SECONDS = env_int("ABUSE_PURGE_INTERVAL_SECONDS", 3600)

# --- Auth, i18n -------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "builds.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["builds.api.permissions.HasTokenScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "buildhub.api.Pagination",
    "DEFAULT_THROTTLE_CLASSES": ["buildhub.throttling.CacheRateThrottle"],
    "EXCEPTION_HANDLER": "buildhub.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "BuildHub API",
    "DESCRIPTION": "Submit mobile builds and publish jobs, follow them, fetch their artifacts.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # Swagger UI from static/, not a CDN: the docs work offline and under a strict CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "buildhub.schema.document_errors",
    ],
    "ENUM_NAME_OVERRIDES": {
        "PlatformEnum": "publishing.choices.Platform",
        "EnvEnum": "publishing.choices.Environment",
        "JobStatusEnum": "builds.choices.JobStatus",
        "VersionStatusEnum": "publishing.choices.VersionStatus",
        "BuildRunEnvEnum": "buildevents.choices.RunEnv",
        "BuildRunStatusEnum": "buildevents.choices.RunStatus",
        "BuildStageStatusEnum": "buildevents.api.serializers.STAGE_STATUSES",
    },
}

# --- Security ---------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# HTML pages (admin, live pages, API docs) load everything from this origin and run nothing
# inline (json_script blocks are data, not code); no other site may frame them.
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'",
)
# Admin sign-in: failed attempts allowed per window (django-ratelimit rates, e.g. 5/15m) for
# one username from one address, and for one address whatever the usernames; then 429.
ADMIN_LOGIN_FAILURES_PER_USER = env_str("ADMIN_LOGIN_FAILURES_PER_USER", "5/15m")
ADMIN_LOGIN_FAILURES_PER_IP = env_str("ADMIN_LOGIN_FAILURES_PER_IP", "20/15m")
SESSION_COOKIE_HTTPONLY = True
# The client address comes from X-Forwarded-For only as far as these proxies vouch for it:
# TRUSTED_PROXY_COUNT proxies in front of the app, each appending the address it saw.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- Observability ----------------------------------------------------------------------
# Each process writes its Prometheus samples under this directory (one file set per process,
# added up by a scrape); prometheus_client reads the variable when it is first imported, so
# it is set here, before anything imports it. Child processes inherit it.
METRICS_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR") or VAR_DIR / "run" / "metrics")
METRICS_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
# /metrics answers a bearer token (Authorization: Bearer <METRICS_TOKEN>) or these networks
# (comma-separated addresses or CIDRs; loopback by default outside production).
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_NETWORKS = env_list(
    "METRICS_ALLOWED_NETWORKS", [] if PRODUCTION else ["127.0.0.0/8", "::1"]
)

# Process logs: one JSON object per line in production, readable text in development; each
# with the request, job, account and worker ids that apply (buildhub.logs), redacted.
LOG_FORMAT = env_str("LOG_FORMAT", "json" if PRODUCTION else "text")
if LOG_FORMAT not in {"json", "text"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'text', got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "buildhub.logs.ContextFilter"}},
    "formatters": {
        "json": {"()": "buildhub.logs.JsonFormatter"},
        "text": {"()": "buildhub.logs.TextFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django-q": {"level": env_str("DJANGO_Q_LOG_LEVEL", "WARNING")},
    },
}
