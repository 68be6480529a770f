"""The inference app's settings, each read as ``settings.NAME`` when defined, else from the environment,
else the default below (so they work before ``investml/settings.py`` declares them). Each is read
once per process; a change through Django's settings (``override_settings``) is seen at once, a
change of the environment after the first read is not.

| setting | default | meaning |
| --- | --- | --- |
| ``ML_MAX_LOADED_MODELS`` | 4 | model versions kept loaded per process (least recently used out) |
| ``ML_ACTIVE_VERSION_CHECK_SECONDS`` | 2.0 | how often a process re-reads the registry's active versions |
| ``ML_MODEL_RETRY_SECONDS`` | 30.0 | how long a failed load is remembered before it is retried |
| ``ML_MAX_BATCH_SIZE`` | 1000 | most instances in one ``{"instances": [...]}`` request |
| ``ML_API_MAX_BODY_BYTES`` | ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB) | larger request bodies get 413 |
| ``ML_PREDICTION_CACHE_SECONDS`` | 86400 | life of a cached prediction (0 disables the cache) |
| ``ML_PREDICTION_CACHE_SHARED`` | on with ``REDIS_URL`` | also keep predictions in the shared Django cache (else per worker only) |
| ``ML_PREDICTION_CACHE_LOCAL_ENTRIES`` | 50000 | predictions each worker keeps in memory (least recently used out) |
| ``ML_PREDICTION_CACHE_VECTOR_BATCHES`` | false | also cache each vector of a batch (tickers always are) |
| ``ML_SLOW_PREDICTION_MS`` | 1000 | a prediction call slower than this logs "Prediction latency exceeded ...ms" |
| ``ML_API_TOKEN_CACHE_SECONDS`` | 30 | how long a worker remembers a checked API token (0: query every request); a user or token saved or deleted anywhere ends every worker's memory at once (``inference.authentication``) |
| ``ML_PREDICTION_LOG_BATCH`` | 200 | buffered prediction-log rows written in one bulk insert |
| ``ML_PREDICTION_LOG_MAX_AGE_SECONDS`` | 5.0 | oldest buffered row age that triggers a write |
| ``ML_PREDICTION_LOG_MAX_BUFFER`` | 50000 | rows kept when the database is unreachable (oldest dropped) |
| ``ML_INFERENCE_THREADS`` | 1 | torch and XGBoost threads per process (gunicorn runs one process per core) |
| ``ML_LSTM_QUANTIZE`` | false | try dynamic int8 quantization of the LSTM (kept only if faster and close) |
| ``ML_LSTM_ONNX`` | false | try serving the LSTM through ONNX Runtime (kept only if faster and close) |
| ``ML_LSTM_QUANTIZE_TOLERANCE`` | 0.05 | largest allowed difference (int8 or ONNX), in target standard deviations |
| ``ML_SEQUENCE_CACHE_SIZE`` | 4096 | per-process cache of tickers' LSTM input sequences |
| ``ML_RECOMMENDATION_BUY_FRACTION`` | 0.2 | top share by expected return that can be BUY |
| ``ML_RECOMMENDATION_SELL_FRACTION`` | 0.2 | bottom share that can be SELL |
| ``ML_RECOMMENDATION_MODELS`` | ensemble, lstm_predictor, xgboost_classifier, prophet_forecaster | preference order |
| ``ML_PREDICTION_LOG_RETENTION_DAYS`` | 90 | prediction-log rows older than this are deleted daily (0: kept) |
| ``ML_COMPLIANCE_RETENTION_DAYS`` | 1827 (5 years) | compliance records older than this are deleted daily, whole chain prefixes (0: kept) |
| ``ML_INTRADAY_ENABLED`` | true | ``POST /predict`` by ticker uses a fresh "today so far" bar (``inference.intraday``) |
| ``ML_INTRADAY_QUOTE_MAX_AGE_SECONDS`` | 900 | a bar whose latest trade is older than this is stale: end-of-day prediction |
| ``ML_INTRADAY_MARKET_SYMBOL`` | SPY | the ticker whose fresh bar gives today's market return (else unknown) |
| ``ML_INTRADAY_WINDOW_SECONDS`` | 300 | how long a worker keeps a ticker's engine inputs before reading them again (news) |
| ``ML_INTRADAY_WINDOW_CACHE_SIZE`` | 512 | tickers whose engine inputs a worker keeps (about 70 KB each) |
| ``ML_INTRADAY_CLOCK_SKEW_SECONDS`` | 60 | how far in the future a pushed quote's time may be |
| ``ML_INTRADAY_POLL_ENABLED`` | false | the ``inference.poll_quotes`` task (every minute) polls the provider's snapshot |
| ``ML_INTRADAY_POLL_PROVIDER`` | polygon | the provider polled |
| ``ML_INTRADAY_POLL_HOURS`` | 09:30-16:00 | New York hours of trading days in which the task polls |
| ``ML_INTRADAY_POLL_TICKERS`` | every active ticker | comma-separated tickers to poll |
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from investml.env import setting_or_env

_TRUE = {"1", "true", "yes", "on"}


_read: dict[str, Any] = {}  # name -> raw value, read once per process (the API reads these per request)


def _raw(name: str) -> Any:
    try:
        return _read[name]
    except KeyError:
        value = setting_or_env(name)
        _read[name] = value
        return value


def forget(**_: Any) -> None:
    """Read every setting afresh (on Django's ``setting_changed``: tests, ``override_settings``)."""
    _read.clear()


setting_changed.connect(forget, dispatch_uid="inference.conf.forget")


def _int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    try:
        out = int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        out = default
    return max(out, minimum) if minimum is not None else out


def _float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    try:
        out = float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        out = default
    return max(out, minimum) if minimum is not None else out


def _bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def max_loaded_models() -> int:
    return _int("ML_MAX_LOADED_MODELS", 4, minimum=1)


def active_check_seconds() -> float:
    return _float("ML_ACTIVE_VERSION_CHECK_SECONDS", 2.0, minimum=0.0)


def retry_seconds() -> float:
    return _float("ML_MODEL_RETRY_SECONDS", 30.0, minimum=0.0)


def max_batch_size() -> int:
    return _int("ML_MAX_BATCH_SIZE", 1000, minimum=1)


def max_body_bytes() -> int:
    default = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None) or 2_621_440
    return _int("ML_API_MAX_BODY_BYTES", int(default), minimum=1024)


def prediction_cache_seconds() -> int:
    return _int("ML_PREDICTION_CACHE_SECONDS", 86_400, minimum=0)


def prediction_cache_shared() -> bool:
    """Share cached predictions between workers through the Django cache: default on with Redis."""
    return _bool("ML_PREDICTION_CACHE_SHARED", bool(getattr(settings, "REDIS_URL", "")))


def prediction_cache_local_entries() -> int:
    return _int("ML_PREDICTION_CACHE_LOCAL_ENTRIES", 50_000, minimum=0)


def cache_vector_batches() -> bool:
    return _bool("ML_PREDICTION_CACHE_VECTOR_BATCHES", False)


def log_batch() -> int:
    return _int("ML_PREDICTION_LOG_BATCH", 200, minimum=1)


def slow_prediction_ms() -> float:
    return _float("ML_SLOW_PREDICTION_MS", 1000.0, minimum=0.0)


def token_cache_seconds() -> float:
    return _float("ML_API_TOKEN_CACHE_SECONDS", 30.0, minimum=0.0)


def log_max_age() -> float:
    return _float("ML_PREDICTION_LOG_MAX_AGE_SECONDS", 5.0, minimum=0.0)


def log_max_buffer() -> int:
    return _int("ML_PREDICTION_LOG_MAX_BUFFER", 50_000, minimum=100)


def inference_threads() -> int:
    return _int("ML_INFERENCE_THREADS", 1, minimum=1)


def lstm_quantize() -> bool:
    return _bool("ML_LSTM_QUANTIZE", False)


def lstm_onnx() -> bool:
    return _bool("ML_LSTM_ONNX", False)


def lstm_quantize_tolerance() -> float:
    return _float("ML_LSTM_QUANTIZE_TOLERANCE", 0.05, minimum=0.0)


def sequence_cache_size() -> int:
    return _int("ML_SEQUENCE_CACHE_SIZE", 4096, minimum=0)


def buy_fraction() -> float:
    return min(_float("ML_RECOMMENDATION_BUY_FRACTION", 0.2, minimum=0.0), 1.0)


def sell_fraction() -> float:
    return min(_float("ML_RECOMMENDATION_SELL_FRACTION", 0.2, minimum=0.0), 1.0)


def recommendation_models() -> list[str]:
    value = _raw("ML_RECOMMENDATION_MODELS")
    if isinstance(value, list | tuple):
        names = [str(v) for v in value]
    elif value:
        names = [v.strip() for v in str(value).split(",") if v.strip()]
    else:
        names = ["ensemble", "lstm_predictor", "xgboost_classifier", "prophet_forecaster"]
    return names


def prediction_log_retention_days() -> int:
    return _int("ML_PREDICTION_LOG_RETENTION_DAYS", 90, minimum=0)


def compliance_retention_days() -> int:
    return _int("ML_COMPLIANCE_RETENTION_DAYS", 5 * 365 + 2, minimum=0)


# intraday quotes (inference.quotes, inference.intraday)


def intraday_enabled() -> bool:
    return _bool("ML_INTRADAY_ENABLED", True)


def intraday_quote_max_age() -> float:
    return _float("ML_INTRADAY_QUOTE_MAX_AGE_SECONDS", 900.0, minimum=0.0)


def intraday_market_symbol() -> str:
    return str(_raw("ML_INTRADAY_MARKET_SYMBOL") or "SPY").strip().upper()


def intraday_window_seconds() -> float:
    return _float("ML_INTRADAY_WINDOW_SECONDS", 300.0, minimum=0.0)


def intraday_window_cache_size() -> int:
    return _int("ML_INTRADAY_WINDOW_CACHE_SIZE", 512, minimum=0)


def intraday_clock_skew() -> float:
    return _float("ML_INTRADAY_CLOCK_SKEW_SECONDS", 60.0, minimum=0.0)


def intraday_poll_enabled() -> bool:
    return _bool("ML_INTRADAY_POLL_ENABLED", False)


def intraday_poll_provider() -> str:
    return str(_raw("ML_INTRADAY_POLL_PROVIDER") or "polygon").strip().lower()


def intraday_poll_hours() -> str:
    return str(_raw("ML_INTRADAY_POLL_HOURS") or "09:30-16:00").strip()


def intraday_poll_tickers() -> list[str]:
    value = _raw("ML_INTRADAY_POLL_TICKERS")
    if isinstance(value, list | tuple):
        return [str(v).strip().upper() for v in value if str(v).strip()]
    return [v.strip().upper() for v in str(value or "").split(",") if v.strip()]
