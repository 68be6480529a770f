"""The inference app's settings, typed readers of ``settings.<NAME>`` (declared, documented and
checked in ``investml/settings.py``; the README's "Configuration" table lists them). Read at each
call, so a change through Django's settings (``override_settings``, tests) is seen at once.
"""

from __future__ import annotations

from django.conf import settings


def max_loaded_models() -> int:
    return settings.ML_MAX_LOADED_MODELS


def active_check_seconds() -> float:
    return settings.ML_ACTIVE_VERSION_CHECK_SECONDS


def retry_seconds() -> float:
    return settings.ML_MODEL_RETRY_SECONDS


def max_batch_size() -> int:
    return settings.ML_MAX_BATCH_SIZE


def max_body_bytes() -> int:
    return settings.ML_API_MAX_BODY_BYTES


def prediction_cache_seconds() -> int:
    return settings.ML_PREDICTION_CACHE_SECONDS


def prediction_cache_shared() -> bool:
    """Share cached predictions between workers through the Django cache: default on with Redis."""
    return settings.ML_PREDICTION_CACHE_SHARED


def prediction_cache_local_entries() -> int:
    return settings.ML_PREDICTION_CACHE_LOCAL_ENTRIES


def cache_vector_batches() -> bool:
    return settings.ML_PREDICTION_CACHE_VECTOR_BATCHES


def log_batch() -> int:
    return settings.ML_PREDICTION_LOG_BATCH


def slow_prediction_ms() -> float:
    return settings.ML_SLOW_PREDICTION_MS


def token_cache_seconds() -> float:
    return settings.ML_API_TOKEN_CACHE_SECONDS


def log_max_age() -> float:
    return settings.ML_PREDICTION_LOG_MAX_AGE_SECONDS


def log_max_buffer() -> int:
    return settings.ML_PREDICTION_LOG_MAX_BUFFER


def inference_threads() -> int:
    return settings.ML_INFERENCE_THREADS


def lstm_quantize() -> bool:
    return settings.ML_LSTM_QUANTIZE


def lstm_onnx() -> bool:
    return settings.ML_LSTM_ONNX


def lstm_quantize_tolerance() -> float:
    return settings.ML_LSTM_QUANTIZE_TOLERANCE


def sequence_cache_size() -> int:
    return settings.ML_SEQUENCE_CACHE_SIZE


def buy_fraction() -> float:
    return settings.ML_RECOMMENDATION_BUY_FRACTION


def sell_fraction() -> float:
    return settings.ML_RECOMMENDATION_SELL_FRACTION


def recommendation_models() -> list[str]:
    return list(settings.ML_RECOMMENDATION_MODELS)


def prediction_log_retention_days() -> int:
    return settings.ML_PREDICTION_LOG_RETENTION_DAYS


def compliance_retention_days() -> int:
    return settings.ML_COMPLIANCE_RETENTION_DAYS


# intraday quotes (inference.quotes, inference.intraday)


def intraday_enabled() -> bool:
    return settings.ML_INTRADAY_ENABLED


def intraday_quote_max_age() -> float:
    return settings.ML_INTRADAY_QUOTE_MAX_AGE_SECONDS


def intraday_market_symbol() -> str:
    return settings.ML_INTRADAY_MARKET_SYMBOL


def intraday_window_seconds() -> float:
    return settings.ML_INTRADAY_WINDOW_SECONDS


def intraday_window_cache_size() -> int:
    return settings.ML_INTRADAY_WINDOW_CACHE_SIZE


def intraday_clock_skew() -> float:
    return settings.ML_INTRADAY_CLOCK_SKEW_SECONDS


def intraday_max_move() -> float:
    return settings.ML_INTRADAY_MAX_MOVE


def intraday_poll_enabled() -> bool:
    return settings.ML_INTRADAY_POLL_ENABLED


def intraday_poll_provider() -> str:
    return settings.ML_INTRADAY_POLL_PROVIDER


def intraday_poll_hours() -> str:
    return settings.ML_INTRADAY_POLL_HOURS


def intraday_poll_tickers() -> list[str]:
    return list(settings.ML_INTRADAY_POLL_TICKERS)
