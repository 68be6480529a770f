"""InvestML settings, read from the environment (django-environ).

With no environment at all it runs embedded: SQLite in WAL mode, a filesystem Celery broker and
file-based cache under ./var/. DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis.

Every environment variable the code uses is read here, once, into a typed setting of the same name
(the README's "Configuration" table lists them); the apps read ``settings.<NAME>``. A value that
does not parse, or is out of range, stops start-up with ImproperlyConfigured naming the variable.
An empty value (docker-compose passes one when a variable is unset) means "not set".
"""

from __future__ import annotations

import math
import os
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.conf import global_settings
from django.core.exceptions import ImproperlyConfigured

from features import storage
from investml.pipeline_config import PipelineConfigError, load_pipeline_config
from monitoring.config import PERFORMANCE_METRICS
from registry.metrics import METRIC_KEYS

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file is a convenience for one machine; real deployments set the environment.
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")


def _raw(name: str) -> str:
    return env.str(name, default="").strip()


def _number(name: str, default: int | float | None, *, cast: type, minimum: float | None,
            maximum: float | None) -> int | float | None:
    raw = _raw(name)
    if not raw:
        value = default
    else:
        # Python's int/float, not env.float: that one drops every character but digits, "." "," and
        # "-", so "1e-4" fails and "12abc" reads 12
        try:
            value = cast(raw)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise ImproperlyConfigured(f"{name} must be {'an integer' if cast is int else 'a number'} (got {raw!r})")
    if value is None:
        return None
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name} must be between {minimum:g} and {maximum:g} (got {value:g})")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum:g} (got {value:g})")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum:g} (got {value:g})")
    return value


def _int(name: str, default: int | None, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """The integer ``name``, ``default`` when unset."""
    return _number(name, default, cast=int, minimum=minimum, maximum=maximum)


def _float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """The number ``name``, ``default`` when unset."""
    return float(_number(name, default, cast=float, minimum=minimum, maximum=maximum))


def _bool(name: str, default: bool) -> bool:
    return env.bool(name) if _raw(name) else default


def _str(name: str, default: str) -> str:
    return _raw(name) or default


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """``name`` in lower case, one of ``choices``."""
    value = _str(name, default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)} (got {value!r})")
    return value


def _list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list, each item stripped, empty items dropped."""
    return [item.strip() for item in env.list(name, default=[]) if item.strip()] or list(default)


VAR_DIR = Path(env.str("INVESTML_VAR_DIR", default=str(BASE_DIR / "var")))


def _installation_secret_key(path: Path) -> str:
    """Outside production without DJANGO_SECRET_KEY: this installation's own random key, made once
    and kept (mode 600) in the var folder that its web server, workers and beat share, so no running
    deployment signs with a key published in the code (``make run``, ``docker compose up``)."""
    try:
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)  # complete or absent; when another process won the race, its key is the key
        except FileExistsError:
            pass
        finally:
            draft.unlink()
        return path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot keep a secret key in {path} ({exc}); set DJANGO_SECRET_KEY") from exc


# --- Core -------------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
PRODUCTION = env.bool("DJANGO_PRODUCTION", default=False)
# Keys that were ever written down as defaults (here or in docker-compose.yml): never valid in production.
KNOWN_INSECURE_KEYS = frozenset({"insecure-dev-key-only-for-local-use-" + "x" * 20, "change-me-in-production",
                                 "changeme", "secret"})
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
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _installation_secret_key(VAR_DIR / "secret-key")
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
    "investml.middleware.LazyMessageMiddleware",  # Django's, with the storage built on first use
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
    # an unreachable server fails a request after this many seconds (libpq waits forever by default)
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=10))
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
# every machine shares (features.storage; endpoint and credentials from the standard AWS_* variables,
# which botocore reads itself).


def _storage_setting(name: str, default: Path) -> Path | str:
    try:
        return storage.storage_root(env.str(name, default=str(default)))
    except storage.StorageError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from exc


ML_MODELS_PATH = _storage_setting("ML_MODELS_PATH", VAR_DIR / "ml_models")
ML_LOGS_PATH = Path(env.str("ML_LOGS_PATH", default=str(VAR_DIR / "ml_logs")))
ML_REGISTRY_PATH = Path(env.str("ML_REGISTRY_PATH", default=str(VAR_DIR / "ml_registry")))
ML_FEATURES_PATH = _storage_setting("ML_FEATURES_PATH", VAR_DIR / "features")
# On S3, how long a feature-store writer's lease object holds before another writer may take it
# over (a killed writer's lease expires); features.storage is Django-free, so it is handed over here.
ML_STORAGE_LOCK_TTL_SECONDS = _float("ML_STORAGE_LOCK_TTL_SECONDS", 900.0, minimum=1.0)
storage.configure(lock_ttl_seconds=ML_STORAGE_LOCK_TTL_SECONDS)
# An online vector missing from this machine's cache is read from the offline store and cached for
# this long (0: never; features.selectors._read_through).
ML_ONLINE_READTHROUGH_SECONDS = _int("ML_ONLINE_READTHROUGH_SECONDS", 300, minimum=0)
# Daily market-data provider (alphavantage, stooq, tiingo, polygon, files, files:<folder>); empty = the
# local files under ML_DATA_PATH (features.services.provider_config).
ML_MARKET_DATA_PROVIDER = _raw("ML_MARKET_DATA_PROVIDER")  # not lower-cased: a files:<folder> path keeps its case
ML_DATA_PATH = Path(env.str("ML_DATA_PATH", default=str(BASE_DIR / "sample_data")))
# Fundamentals and news (features.services.data_refresh): the provider of each (empty: off), the
# fundamentals cycle in days and a cap on a day's fundamentals requests (0: none beyond the quota).
ML_FUNDAMENTALS_PROVIDER = _raw("ML_FUNDAMENTALS_PROVIDER").lower()
ML_FUNDAMENTALS_REFRESH_DAYS = _int("ML_FUNDAMENTALS_REFRESH_DAYS", 7, minimum=1)
ML_FUNDAMENTALS_MAX_REQUESTS_PER_DAY = _int("ML_FUNDAMENTALS_MAX_REQUESTS_PER_DAY", 0, minimum=0)
ML_NEWS_PROVIDER = _raw("ML_NEWS_PROVIDER").lower()
# Social-media posts (features.services.social): ML_SOCIAL_PROVIDER=stocktwits fetches each active ticker's
# public stream in the pipeline's market-data stage, up to ML_SOCIAL_MAX_PAGES pages of 30 posts per ticker;
# empty (the default) fetches nothing. Files load with `manage.py ingest_social` either way.
ML_SOCIAL_PROVIDER = _raw("ML_SOCIAL_PROVIDER").lower()
ML_SOCIAL_MAX_PAGES = _int("ML_SOCIAL_MAX_PAGES", 5, minimum=1)

ML_PIPELINE_CONFIG = Path(env.str("ML_PIPELINE_CONFIG", default=str(BASE_DIR / "config" / "pipeline.json")))
try:
    PIPELINE_CONFIG = load_pipeline_config(ML_PIPELINE_CONFIG)
except PipelineConfigError as exc:
    raise ImproperlyConfigured(f"Invalid pipeline config: {exc}") from exc

if PIPELINE_CONFIG.training.promotion_metric not in METRIC_KEYS:
    raise ImproperlyConfigured(f"Invalid pipeline config: training.promotion_metric "
                               f"{PIPELINE_CONFIG.training.promotion_metric!r} is not one of {', '.join(METRIC_KEYS)}")

# Environment variables win over the config file, as the spec lists both.
ENABLE_AUTO_RETRAINING = _bool("ENABLE_AUTO_RETRAINING", PIPELINE_CONFIG.orchestrator.enable_auto_retraining)
MODEL_PERFORMANCE_THRESHOLD = _float(
    "MODEL_PERFORMANCE_THRESHOLD", PIPELINE_CONFIG.training.performance_threshold, minimum=0
)
DATA_DRIFT_THRESHOLD = _float("DATA_DRIFT_THRESHOLD", PIPELINE_CONFIG.training.drift_threshold, minimum=0)
ML_DAILY_COST_LIMIT_USD = _float("ML_DAILY_COST_LIMIT_USD", PIPELINE_CONFIG.orchestrator.cost_limit_daily_usd,
                                 minimum=0)
# the spec's "operational costs under $50/month"
ML_MONTHLY_COST_LIMIT_USD = _float("ML_MONTHLY_COST_LIMIT_USD", 50.0, minimum=0)
# Redis key prefix of the provider limits and API spend every worker shares (features.services.limits)
ML_SHARED_LIMITS_PREFIX = env.str("ML_SHARED_LIMITS_PREFIX", default="investml:limits:")
ML_API_HOST = env.str("ML_API_HOST", default="0.0.0.0")
ML_API_PORT = _int("ML_API_PORT", 8001, minimum=1, maximum=65535)
ML_WORKERS = _int("ML_WORKERS", 4, minimum=1)

# --- Training (training.config) -----------------------------------------------------------------
# Walk-forward evaluation: folds, test days per fold, training days before the first fold, and the
# purge gap between training and test (unset: the horizon; never less, checked per run).
ML_WALK_FORWARD_FOLDS = _int("ML_WALK_FORWARD_FOLDS", 3, minimum=1)
ML_WALK_FORWARD_TEST_DAYS = _int("ML_WALK_FORWARD_TEST_DAYS", 63, minimum=1)
ML_WALK_FORWARD_MIN_TRAIN_DAYS = _int("ML_WALK_FORWARD_MIN_TRAIN_DAYS", 252, minimum=1)
ML_WALK_FORWARD_GAP_DAYS = _int("ML_WALK_FORWARD_GAP_DAYS", None, minimum=0)
ML_WALK_FORWARD_MAX_TICKERS = _int("ML_WALK_FORWARD_MAX_TICKERS", 1000, minimum=0)
# The spec's "data sampling for large datasets": the LSTM fits on a seeded random sample of this many
# labelled rows, the others still feed its sequences (0: all). At the config's 128 units x 60 days it
# trains ~3,500 rows/s on 2 cores, and early stopping runs at least 1 + patience epochs.
ML_LSTM_MAX_TRAIN_ROWS = _int("ML_LSTM_MAX_TRAIN_ROWS", 50_000, minimum=0)
ML_PROPHET_CHUNK_TICKERS = _int("ML_PROPHET_CHUNK_TICKERS", 50, minimum=1)  # tickers per Prophet task
ML_COMPUTE_USD_PER_CPU_HOUR = _float("ML_COMPUTE_USD_PER_CPU_HOUR", 0.05, minimum=0)  # training's cost records
# A training task redelivered after its worker was lost (most often the out-of-memory killer) runs
# again this many times in all, then fails as out of memory.
ML_TRAINING_MAX_ATTEMPTS = _int("ML_TRAINING_MAX_ATTEMPTS", 3, minimum=1)
# OpenMP threads (XGBoost, torch) spin while they wait by default; on a machine shared with other
# processes that burns the cores the other threads need (measured here: LSTM training 1.8x and
# XGBoost 1.5x slower under load). Passive waiting costs almost nothing when the machine is idle.
# Only effective before XGBoost/torch load: settings load first in every process (and workers inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# --- Pipeline orchestrator (training.orchestrator.config) --------------------------------------
# A running stage's heartbeat interval; a run whose heartbeat is older than the timeout is reaped;
# how often a waiting stage polls; tickers per feature-build chunk task.
ML_PIPELINE_HEARTBEAT_SECONDS = _float("ML_PIPELINE_HEARTBEAT_SECONDS", 30.0, minimum=0.05)
ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS = _float("ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS", 600.0, minimum=1.0)
ML_PIPELINE_POLL_SECONDS = _float("ML_PIPELINE_POLL_SECONDS", 10.0, minimum=0.05)
ML_PIPELINE_FEATURE_CHUNK_TICKERS = _int("ML_PIPELINE_FEATURE_CHUNK_TICKERS", 500, minimum=1)

# --- Promotion gate (registry.gate_decision.gate_settings) --------------------------------------
# "confidence": the threshold applies to the one-sided confidence that the metric shows skill;
# "value": to the metric's value. A new version must beat the active one by more than the minimum
# improvement on the out-of-sample dates both scored; with fewer shared dates the active one is replayed.
ML_PROMOTION_SCORE = _choice("ML_PROMOTION_SCORE", "confidence", ("confidence", "value"))
ML_PROMOTION_MIN_IMPROVEMENT = _float("ML_PROMOTION_MIN_IMPROVEMENT", 0.0)
ML_PROMOTION_MIN_COMMON_DATES = _int("ML_PROMOTION_MIN_COMMON_DATES", 20, minimum=0)

# --- Inference (inference.conf) -----------------------------------------------------------------
ML_MAX_LOADED_MODELS = _int("ML_MAX_LOADED_MODELS", 4, minimum=1)  # per process, least recently used out
ML_ACTIVE_VERSION_CHECK_SECONDS = _float("ML_ACTIVE_VERSION_CHECK_SECONDS", 2.0, minimum=0)  # registry re-read
ML_MODEL_RETRY_SECONDS = _float("ML_MODEL_RETRY_SECONDS", 30.0, minimum=0)  # a failed load is remembered
ML_MAX_BATCH_SIZE = _int("ML_MAX_BATCH_SIZE", 1000, minimum=1)  # instances in one request
ML_API_MAX_BODY_BYTES = _int("ML_API_MAX_BODY_BYTES", global_settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
                             minimum=1024)  # larger request bodies get 413
ML_PREDICTION_CACHE_SECONDS = _int("ML_PREDICTION_CACHE_SECONDS", 86_400, minimum=0)  # 0: no cache
# also keep predictions in the shared Django cache, not only in each worker
ML_PREDICTION_CACHE_SHARED = _bool("ML_PREDICTION_CACHE_SHARED", bool(REDIS_URL))
ML_PREDICTION_CACHE_LOCAL_ENTRIES = _int("ML_PREDICTION_CACHE_LOCAL_ENTRIES", 50_000, minimum=0)
ML_PREDICTION_CACHE_VECTOR_BATCHES = _bool("ML_PREDICTION_CACHE_VECTOR_BATCHES", False)
ML_SLOW_PREDICTION_MS = _float("ML_SLOW_PREDICTION_MS", 1000.0, minimum=0)  # slower calls are logged
ML_API_TOKEN_CACHE_SECONDS = _float("ML_API_TOKEN_CACHE_SECONDS", 30.0, minimum=0)  # 0: query every request
# The prediction log's buffer: rows per bulk insert, the oldest row's age that forces a write, rows
# kept while the database is unreachable (oldest dropped). The write runs in the worker between
# requests, so the batch bounds the wait of the requests queued behind it: 200 ticker rows (with
# their compliance records) took 16-20 ms, 50 take 4-5 ms, for about 3% more CPU in all.
ML_PREDICTION_LOG_BATCH = _int("ML_PREDICTION_LOG_BATCH", 50, minimum=1)
ML_PREDICTION_LOG_MAX_AGE_SECONDS = _float("ML_PREDICTION_LOG_MAX_AGE_SECONDS", 5.0, minimum=0)
ML_PREDICTION_LOG_MAX_BUFFER = _int("ML_PREDICTION_LOG_MAX_BUFFER", 50_000, minimum=100)
ML_INFERENCE_THREADS = _int("ML_INFERENCE_THREADS", 1, minimum=1)  # torch and XGBoost threads per process
# Serve the LSTM as int8 or through ONNX Runtime, each kept only if faster and within the tolerance
# (in target standard deviations) of float32.
ML_LSTM_QUANTIZE = _bool("ML_LSTM_QUANTIZE", False)
ML_LSTM_ONNX = _bool("ML_LSTM_ONNX", False)
ML_LSTM_QUANTIZE_TOLERANCE = _float("ML_LSTM_QUANTIZE_TOLERANCE", 0.05, minimum=0)
ML_SEQUENCE_CACHE_SIZE = _int("ML_SEQUENCE_CACHE_SIZE", 4096, minimum=0)  # tickers' LSTM input sequences
# Recommendations: the top and bottom shares by expected return that can be BUY and SELL; the models
# in order of preference.
ML_RECOMMENDATION_BUY_FRACTION = _float("ML_RECOMMENDATION_BUY_FRACTION", 0.2, minimum=0, maximum=1)
ML_RECOMMENDATION_SELL_FRACTION = _float("ML_RECOMMENDATION_SELL_FRACTION", 0.2, minimum=0, maximum=1)
ML_RECOMMENDATION_MODELS = _list("ML_RECOMMENDATION_MODELS",
                                 ["ensemble", "lstm_predictor", "xgboost_classifier", "prophet_forecaster"])
# Daily retention (inference.apply_retention): prediction-log rows and compliance records (whole
# chain prefixes) older than this many days are deleted (0: kept).
ML_PREDICTION_LOG_RETENTION_DAYS = _int("ML_PREDICTION_LOG_RETENTION_DAYS", 90, minimum=0)
ML_COMPLIANCE_RETENTION_DAYS = _int("ML_COMPLIANCE_RETENTION_DAYS", 5 * 365 + 2, minimum=0)
# Intraday quotes (inference.quotes, inference.intraday): POST /predict by ticker uses a fresh "today
# so far" bar (a bar whose latest trade is older than the maximum age is stale: end-of-day prediction);
# the market ticker's fresh bar gives today's market return; a worker keeps a ticker's engine inputs
# for the window seconds (news), for up to the cache size tickers; a pushed quote may be up to the
# clock skew in the future. The every-minute poll of a provider's snapshot, in New York hours of
# trading days, of the given tickers (empty: every active ticker).
ML_INTRADAY_ENABLED = _bool("ML_INTRADAY_ENABLED", True)
ML_INTRADAY_QUOTE_MAX_AGE_SECONDS = _float("ML_INTRADAY_QUOTE_MAX_AGE_SECONDS", 900.0, minimum=0)
ML_INTRADAY_MARKET_SYMBOL = _str("ML_INTRADAY_MARKET_SYMBOL", "SPY").upper()
ML_INTRADAY_WINDOW_SECONDS = _float("ML_INTRADAY_WINDOW_SECONDS", 300.0, minimum=0)
ML_INTRADAY_WINDOW_CACHE_SIZE = _int("ML_INTRADAY_WINDOW_CACHE_SIZE", 512, minimum=0)
ML_INTRADAY_CLOCK_SKEW_SECONDS = _float("ML_INTRADAY_CLOCK_SKEW_SECONDS", 60.0, minimum=0)
# a quote further than this fraction from the last stored close, either way (1: half to double), is
# refused (pushed) or skipped (polled): a bad tick, a split or another ticker's price; 0: no check
ML_INTRADAY_MAX_MOVE = _float("ML_INTRADAY_MAX_MOVE", 1.0, minimum=0)
ML_INTRADAY_POLL_ENABLED = _bool("ML_INTRADAY_POLL_ENABLED", False)
ML_INTRADAY_POLL_PROVIDER = _str("ML_INTRADAY_POLL_PROVIDER", "polygon").lower()
ML_INTRADAY_POLL_HOURS = _str("ML_INTRADAY_POLL_HOURS", "09:30-16:00")
ML_INTRADAY_POLL_TICKERS = [ticker.upper() for ticker in _list("ML_INTRADAY_POLL_TICKERS", [])]

# --- Monitoring and alerts (monitoring.config) ---------------------------------------------------
# The first five default to the pipeline config's "monitoring" section; the environment wins.
MONITORING_LATENCY_MS_THRESHOLD = _float("MONITORING_LATENCY_MS_THRESHOLD",
                                         PIPELINE_CONFIG.monitoring.latency_ms_threshold, minimum=0)
MONITORING_ERROR_RATE_THRESHOLD = _float("MONITORING_ERROR_RATE_THRESHOLD",
                                         PIPELINE_CONFIG.monitoring.error_rate_threshold, minimum=0, maximum=1)
MONITORING_RESOURCE_USAGE_THRESHOLD = _float("MONITORING_RESOURCE_USAGE_THRESHOLD",
                                             PIPELINE_CONFIG.monitoring.resource_usage_threshold, minimum=0, maximum=1)
MONITORING_DRIFT_WINDOW_DAYS = _int("MONITORING_DRIFT_WINDOW_DAYS", PIPELINE_CONFIG.monitoring.drift_window_days,
                                    minimum=1)
MONITORING_PERFORMANCE_WINDOW_DAYS = _int("MONITORING_PERFORMANCE_WINDOW_DAYS",
                                          PIPELINE_CONFIG.monitoring.performance_window_days, minimum=1)
MONITORING_DISK_USAGE_THRESHOLD = _float("MONITORING_DISK_USAGE_THRESHOLD", 0.90, minimum=0, maximum=1)
MONITORING_MIN_REQUESTS = _int("MONITORING_MIN_REQUESTS", 20, minimum=0)  # before the error rate can alert
MONITORING_MIN_LATENCY_REQUESTS = _int("MONITORING_MIN_LATENCY_REQUESTS", 5, minimum=0)  # before latency can
MONITORING_METRICS_WINDOW_MINUTES = _int("MONITORING_METRICS_WINDOW_MINUTES", 5, minimum=1)  # request metrics
MONITORING_FAILED_RUN_LOOKBACK_HOURS = _float("MONITORING_FAILED_RUN_LOOKBACK_HOURS", 24.0, minimum=0)
# Live accuracy: the metric tracked per version, "relative" (the floor is MODEL_PERFORMANCE_THRESHOLD times
# the validated value) or "absolute" (MODEL_PERFORMANCE_THRESHOLD itself), the scored predictions a
# version needs before it can alert (monitoring.config explains the choice).
MONITORING_PERFORMANCE_METRIC = _choice("MONITORING_PERFORMANCE_METRIC", "accuracy", PERFORMANCE_METRICS)
MONITORING_PERFORMANCE_MODE = _choice("MONITORING_PERFORMANCE_MODE", "relative", ("relative", "absolute"))
MONITORING_MIN_PERFORMANCE_SAMPLES = _int("MONITORING_MIN_PERFORMANCE_SAMPLES", 50, minimum=0)
# Calibrated for 20-day windows (see README "Monitoring and dashboard"): a month of a correlated
# cross-section moves trend features together, so the textbook PSI 0.25 flags calm months.
MONITORING_DRIFT_PSI_THRESHOLD = _float("MONITORING_DRIFT_PSI_THRESHOLD", 0.5, minimum=0)
MONITORING_DRIFT_KS_THRESHOLD = _float("MONITORING_DRIFT_KS_THRESHOLD", 0.2, minimum=0, maximum=1)
# Notifications of an alert: e-mail to ALERT_EMAILS, a POST to ALERT_WEBHOOK_URL; an alert still
# firing is notified again after the cooldown.
ALERT_EMAILS = _list("ALERT_EMAILS", [])
ALERT_WEBHOOK_URL = _raw("ALERT_WEBHOOK_URL")
ALERT_WEBHOOK_TIMEOUT_SECONDS = _float("ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1)
ALERT_NOTIFICATION_COOLDOWN_SECONDS = _float("ALERT_NOTIFICATION_COOLDOWN_SECONDS", 3600.0, minimum=0)
ML_STORAGE_USD_PER_GB_MONTH = _float("ML_STORAGE_USD_PER_GB_MONTH", 0.023, minimum=0)  # storage cost records

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
LOGIN_FAILURE_LIMIT = _int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
LOGIN_FAILURE_LIMIT_PER_ADDRESS = _int("LOGIN_FAILURE_LIMIT_PER_ADDRESS", 20, minimum=1)
LOGIN_COOLOFF_MINUTES = _int("LOGIN_COOLOFF_MINUTES", 15, minimum=1)
# `manage.py ensure_admin`: the admin user it creates, and a password to set (else one is generated)
DJANGO_ADMIN_USER = _str("DJANGO_ADMIN_USER", "admin")
DJANGO_ADMIN_PASSWORD = env.str("DJANGO_ADMIN_PASSWORD", default="")
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
