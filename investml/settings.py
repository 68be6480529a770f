"""InvestML settings, read from the environment (django-environ).

With no environment at all it runs embedded: SQLite in WAL mode, a filesystem Celery broker and
file-based cache under ./var/. DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from features.storage import StorageError, storage_root
from investml.pipeline_config import PipelineConfigError, load_pipeline_config
from registry.metrics import METRIC_KEYS

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file is a convenience for one machine; real deployments set the environment.
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

VAR_DIR = Path(env.str("INVESTML_VAR_DIR", default=str(BASE_DIR / "var")))

# --- Core -------------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
PRODUCTION = env.bool("DJANGO_PRODUCTION", default=False)
_DEV_SECRET_KEY = "insecure-dev-key-only-for-local-use-" + "x" * 20
# Keys that were ever written down as defaults (here or in docker-compose.yml): never valid in production.
KNOWN_INSECURE_KEYS = frozenset({_DEV_SECRET_KEY, "change-me-in-production", "changeme", "secret"})
MIN_SECRET_KEY_LENGTH = 50  # Django's own check --deploy threshold
if PRODUCTION:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")  # no default: production must set it
    if not SECRET_KEY:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set; production needs its own random key")
    if SECRET_KEY in KNOWN_INSECURE_KEYS or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is a published default; production needs its own random key")
    if len(SECRET_KEY) < MIN_SECRET_KEY_LENGTH or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is too weak: at least {MIN_SECRET_KEY_LENGTH} characters, 5 of them different"
        )
else:
    # an empty value (docker-compose passes one when the variable is unset) means "not set"
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _DEV_SECRET_KEY
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_celery_beat",
    "django_celery_results",
    "investml",
    "registry",
    "features",
    "training",
    "inference",
    "monitoring",
    "axes",  # failed sign-in limits (investml.login_limits)
]

MIDDLEWARE = [
    "monitoring.middleware.RequestMetricsMiddleware",
    # a view that meets a database outage answers 503 (JSON on API routes), not Django's 500
    "investml.errors.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # last, as django-axes asks: turns a locked-out sign-in into its 429 page
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "investml.urls"
WSGI_APPLICATION = "investml.wsgi.application"

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

# --- Database ---------------------------------------------------------------------------------
SQLITE_PATH = VAR_DIR / "investml.sqlite3"
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; IMMEDIATE avoids lock-upgrade deadlocks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # Persistent: closing the last connection forces a WAL checkpoint on every request.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    # A file, not :memory:, so a real Celery worker process in the tests sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_investml.sqlite3")}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and broker -------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="investml"),
            "TIMEOUT": None,
            "OPTIONS": {"serializer": "investml.cache_serializers.JSONSerializer"},
        }
    }
else:
    from investml.cache_serializers import JSONCounterDisk

    # A SQLite-backed disk cache shared by the web server, worker and beat (the online feature
    # store, prediction cache and request metrics); values are stored as JSON, never pickled.
    CACHES = {
        "default": {
            "BACKEND": "investml.cache_serializers.PersistentDiskCache",
            "LOCATION": str(VAR_DIR / "cache"),
            "TIMEOUT": None,
            "SHARDS": 4,
            "OPTIONS": {"disk": JSONCounterDisk, "size_limit": 2**30},
        }
    }

CELERY_BROKER_DIR = VAR_DIR / "broker"
if REDIS_URL:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
    CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600 * 26}
else:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
    CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="django-db")
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_TIMEZONE = "UTC"
# Short periodic work (alert rules, the reaper, the dispatcher, retention, storage cost) has its own
# queue and worker (Procfile "maintenance", compose "maintenance-worker"), so it never waits behind a
# training task; the default queue ("celery") carries the pipeline. A worker started without
# --queues consumes both, so a one-worker deployment still runs the maintenance tasks.
MAINTENANCE_QUEUE = "maintenance"
CELERY_TASK_QUEUES = {"celery": {}, MAINTENANCE_QUEUE: {}}
CELERY_TASK_ROUTES = {
    name: {"queue": MAINTENANCE_QUEUE}
    for name in ("monitoring.evaluate_alerts", "monitoring.record_storage_cost", "training.pipeline.reap_stale",
                 "training.pipeline.dispatch_queued", "inference.apply_retention", "inference.poll_quotes")
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# A restarted broker (Redis): workers reconnect for as long as it takes (at start too); a finished task
# waits for the result backend (up to ~10 minutes) instead of being marked failed, which failed a chord's
# chunk and so its learner; running tasks keep running (cancelling them would kill a training run).
# Held and prefetched messages are put back on reconnect, and chain steps published patiently, by the
# worker (investml/celery.py).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = 120
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

# --- The spec's ML configuration --------------------------------------------------------------
# ML_MODELS_PATH and ML_FEATURES_PATH: a local folder (a Path) or s3://bucket/prefix (a str) that
# every machine shares (features.storage; endpoint and credentials from the standard AWS_* variables).


def _storage_setting(name: str, default: Path) -> Path | str:
    try:
        return storage_root(env.str(name, default=str(default)))
    except StorageError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from exc


ML_MODELS_PATH = _storage_setting("ML_MODELS_PATH", VAR_DIR / "ml_models")
ML_LOGS_PATH = Path(env.str("ML_LOGS_PATH", default=str(VAR_DIR / "ml_logs")))
ML_REGISTRY_PATH = Path(env.str("ML_REGISTRY_PATH", default=str(VAR_DIR / "ml_registry")))
ML_FEATURES_PATH = _storage_setting("ML_FEATURES_PATH", VAR_DIR / "features")
# An online vector missing from this machine's cache is read from the offline store and cached for
# this long (0: never; features.selectors._read_through).
ML_ONLINE_READTHROUGH_SECONDS = env.int("ML_ONLINE_READTHROUGH_SECONDS", default=300)
# Daily market-data provider (alphavantage, stooq, tiingo, files); empty = the local files under ML_DATA_PATH.
ML_MARKET_DATA_PROVIDER = env.str("ML_MARKET_DATA_PROVIDER", default="")
ML_DATA_PATH = Path(env.str("ML_DATA_PATH", default=str(BASE_DIR / "sample_data")))
# Social-media posts (features.services.social): ML_SOCIAL_PROVIDER=stocktwits fetches each active ticker's
# public stream in the pipeline's market-data stage, up to ML_SOCIAL_MAX_PAGES pages of 30 posts per ticker;
# empty (the default) fetches nothing. Files load with `manage.py ingest_social` either way.
ML_SOCIAL_PROVIDER = env.str("ML_SOCIAL_PROVIDER", default="").strip().lower()
ML_SOCIAL_MAX_PAGES = env.int("ML_SOCIAL_MAX_PAGES", default=5)
if ML_SOCIAL_MAX_PAGES < 1:
    raise ImproperlyConfigured(f"ML_SOCIAL_MAX_PAGES must be at least 1 (got {ML_SOCIAL_MAX_PAGES})")

ML_PIPELINE_CONFIG = Path(env.str("ML_PIPELINE_CONFIG", default=str(BASE_DIR / "config" / "pipeline.json")))
try:
    PIPELINE_CONFIG = load_pipeline_config(ML_PIPELINE_CONFIG)
except PipelineConfigError as exc:
    raise ImproperlyConfigured(f"Invalid pipeline config: {exc}") from exc

if PIPELINE_CONFIG.training.promotion_metric not in METRIC_KEYS:
    raise ImproperlyConfigured(f"Invalid pipeline config: training.promotion_metric "
                               f"{PIPELINE_CONFIG.training.promotion_metric!r} is not one of {', '.join(METRIC_KEYS)}")

# Environment variables win over the config file, as the spec lists both.
ENABLE_AUTO_RETRAINING = env.bool(
    "ENABLE_AUTO_RETRAINING", default=PIPELINE_CONFIG.orchestrator.enable_auto_retraining
)
MODEL_PERFORMANCE_THRESHOLD = env.float(
    "MODEL_PERFORMANCE_THRESHOLD", default=PIPELINE_CONFIG.training.performance_threshold
)
DATA_DRIFT_THRESHOLD = env.float("DATA_DRIFT_THRESHOLD", default=PIPELINE_CONFIG.training.drift_threshold)
ML_DAILY_COST_LIMIT_USD = env.float(
    "ML_DAILY_COST_LIMIT_USD", default=PIPELINE_CONFIG.orchestrator.cost_limit_daily_usd
)
# Redis key prefix of the provider limits and API spend every worker shares (features.services.limits)
ML_SHARED_LIMITS_PREFIX = env.str("ML_SHARED_LIMITS_PREFIX", default="investml:limits:")
ML_API_HOST = env.str("ML_API_HOST", default="0.0.0.0")
ML_API_PORT = env.int("ML_API_PORT", default=8001)
ML_WORKERS = env.int("ML_WORKERS", default=4)

for _name, _value in {
    "MODEL_PERFORMANCE_THRESHOLD": MODEL_PERFORMANCE_THRESHOLD,
    "DATA_DRIFT_THRESHOLD": DATA_DRIFT_THRESHOLD,
    "ML_DAILY_COST_LIMIT_USD": ML_DAILY_COST_LIMIT_USD,
}.items():
    if _value < 0:
        raise ImproperlyConfigured(f"{_name} must not be negative (got {_value})")
if not 1 <= ML_API_PORT <= 65535:
    raise ImproperlyConfigured(f"ML_API_PORT must be a TCP port (got {ML_API_PORT})")
if ML_WORKERS < 1:
    raise ImproperlyConfigured(f"ML_WORKERS must be at least 1 (got {ML_WORKERS})")

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "inference.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # DRF's, plus a database outage as 503 {"detail", "reason": "database unavailable"}
    "EXCEPTION_HANDLER": "investml.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        # counters per window, not DRF's list of every request time (O(requests) per request)
        "inference.throttling.FixedWindowUserThrottle",
        "inference.throttling.FixedWindowAnonThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("API_THROTTLE_USER", default="100000/minute"),
        "anon": env.str("API_THROTTLE_ANON", default="600/minute"),
        # requests with a missing or bad token, per address (inference.throttling.FailedAuthThrottle)
        "failed_auth": env.str("API_THROTTLE_FAILED_AUTH", default="30/minute"),
    },
    # the client address of the throttles is REMOTE_ADDR; behind N proxies of your own that append to
    # X-Forwarded-For, set API_NUM_PROXIES=N (a client's own X-Forwarded-For is never trusted)
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "InvestML ML API",
    "DESCRIPTION": "Daily stock predictions, model registry and pipeline management.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Auth, i18n, static -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"

# Failed sign-ins on the dashboard and the admin (django-axes, records in the database; see
# investml/login_limits.py): LOGIN_FAILURE_LIMIT failures for one account from one address, or
# LOGIN_FAILURE_LIMIT_PER_ADDRESS from one address over all accounts, lock out for LOGIN_COOLOFF_MINUTES.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out sign-in before any password check
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_FAILURE_LIMIT_PER_ADDRESS = env.int("LOGIN_FAILURE_LIMIT_PER_ADDRESS", default=20)
LOGIN_COOLOFF_MINUTES = env.int("LOGIN_COOLOFF_MINUTES", default=15)
for _name, _value in {"LOGIN_FAILURE_LIMIT": LOGIN_FAILURE_LIMIT, "LOGIN_COOLOFF_MINUTES": LOGIN_COOLOFF_MINUTES,
                      "LOGIN_FAILURE_LIMIT_PER_ADDRESS": LOGIN_FAILURE_LIMIT_PER_ADDRESS}.items():
    if _value < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1 (got {_value})")
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # what a success resets; the address limit is the handler's
AXES_RESET_ON_SUCCESS = True
AXES_HANDLER = "investml.login_limits.LoginLimitHandler"
AXES_LOCKOUT_CALLABLE = "investml.login_limits.lockout_response"
AXES_CLIENT_IP_CALLABLE = "investml.login_limits.client_address"  # the API throttles' address, same proxies rule
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# The dashboard's chart library comes from an installed package (plotly), not a CDN.
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "monitoring.staticfinders.PackageAssetsFinder",
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="investml@localhost")

# --- Production hardening (manage.py check --deploy passes with DJANGO_PRODUCTION=true) -------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # the health probe (compose, load balancers) speaks plain HTTP to the container: a redirect there
    # would read as healthy whatever the state, so /health answers itself
    SECURE_REDIRECT_EXEMPT = [r"^health$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

LOG_LEVEL = env.str("DJANGO_LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        # The training and pipeline log of every process (web, workers, beat, commands) in one file
        # under ML_LOGS_PATH; WatchedFileHandler reopens it after logrotate and never rotates it
        # itself, which several processes appending to one file could not do safely.
        "pipeline_file": {"class": "logging.handlers.WatchedFileHandler", "formatter": "plain", "delay": True,
                          "filename": str(ML_LOGS_PATH / "pipeline.log")},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        **{app: {"handlers": ["pipeline_file"], "level": LOG_LEVEL}  # and the console, by propagation
           for app in ("features", "registry", "training", "inference", "monitoring")},
        "django.db.backends": {"level": "WARNING"},
        # urllib3's DEBUG lines quote request URLs: webhook paths and provider API keys are secrets
        "urllib3": {"level": "INFO"},
        "axes.apps": {"level": "WARNING"},  # its start-up line names only the per-account limit
    },
}

for _path in (VAR_DIR, ML_MODELS_PATH, ML_LOGS_PATH, ML_REGISTRY_PATH, ML_FEATURES_PATH, STATIC_ROOT):
    if isinstance(_path, Path):  # an s3:// root has no folder to make
        _path.mkdir(parents=True, exist_ok=True)
if not REDIS_URL:
    for _sub in ("queue", "processed", "control"):
        (CELERY_BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
