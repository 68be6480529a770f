"""The prediction cache: model outputs keyed by (model version id, input hash) in the Django cache.

Redis when ``REDIS_URL`` is set, the local disk cache otherwise; values are JSON lists
``[expected_return, prob_up, confidence]``. The version id in the key is the invalidation: a newly
promoted version has another id, so it never sees the old version's entries (they expire after
``ML_PREDICTION_CACHE_SECONDS``).

Hits and misses are counted in this process (read by ``/health`` through ``selectors.cache_stats``)
and added to shared counters in the cache when the prediction log is flushed, so ``cache_stats()``
also reports every worker's totals (for ``/metrics``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence

import numpy as np
from django.core.cache import cache

from inference import conf

logger = logging.getLogger(__name__)

PREFIX = "inference:pred"
SHARED_HITS = "inference:cache:hits"
SHARED_MISSES = "inference:cache:misses"

_counter_lock = threading.Lock()
_counters = {"hits": 0, "misses": 0, "unsent_hits": 0, "unsent_misses": 0, "errors": 0}


def vector_hash(values: np.ndarray) -> str:
    """sha256 of a float64 vector's bytes (what the model receives)."""
    data = np.ascontiguousarray(np.asarray(values, dtype=np.float64)).tobytes()
    return hashlib.sha256(b"v1:" + data).hexdigest()


def ticker_hash(*, ticker: str, feature_date: str, feature_set_version_id: int | None) -> str:
    """sha256 of a ticker request: the features it resolves to are fixed by the feature date."""
    text = f"t1:{ticker}:{feature_date}:{feature_set_version_id or 0}"
    return hashlib.sha256(text.encode()).hexdigest()


def key(version_id: int, input_hash: str) -> str:
    return f"{PREFIX}:{version_id}:{input_hash[:40]}"


def _count(hits: int, misses: int) -> None:
    with _counter_lock:
        _counters["hits"] += hits
        _counters["misses"] += misses
        _counters["unsent_hits"] += hits
        _counters["unsent_misses"] += misses


def get_many(version_id: int, hashes: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Cached outputs of the inputs ``hashes`` that are cached (one round trip)."""
    if not hashes or conf.prediction_cache_seconds() <= 0:
        return {}
    keys = {key(version_id, h): h for h in hashes}
    try:
        found = cache.get_many(list(keys))
    except Exception as exc:  # noqa: BLE001 - a cache outage only costs speed
        logger.warning("prediction cache read failed: %s", exc)
        with _counter_lock:
            _counters["errors"] += 1
        found = {}
    out = {}
    for k, value in found.items():
        if isinstance(value, list) and len(value) == 3:
            out[keys[k]] = (float(value[0]), float(value[1]), float(value[2]))
    unique = len(set(hashes))
    _count(len(out), unique - len(out))
    return out


def set_many(version_id: int, outputs: dict[str, tuple[float, float, float]]) -> None:
    ttl = conf.prediction_cache_seconds()
    if not outputs or ttl <= 0:
        return
    payload = {key(version_id, h): [float(v) for v in value] for h, value in outputs.items()}
    try:
        cache.set_many(payload, timeout=ttl)
    except Exception as exc:  # noqa: BLE001
        logger.warning("prediction cache write failed: %s", exc)
        with _counter_lock:
            _counters["errors"] += 1


def _incr(name: str, delta: int) -> None:
    try:
        cache.incr(name, delta)
    except ValueError:  # first increment
        if not cache.add(name, delta, None):
            cache.incr(name, delta)


def publish_counters() -> None:
    """Add this process's new hits and misses to the shared counters (called with the log flush)."""
    with _counter_lock:
        hits, misses = _counters["unsent_hits"], _counters["unsent_misses"]
        _counters["unsent_hits"] = _counters["unsent_misses"] = 0
    try:
        if hits:
            _incr(SHARED_HITS, hits)
        if misses:
            _incr(SHARED_MISSES, misses)
    except Exception as exc:  # noqa: BLE001
        logger.warning("could not publish prediction cache counters: %s", exc)
        with _counter_lock:
            _counters["unsent_hits"] += hits
            _counters["unsent_misses"] += misses


def process_counters() -> dict[str, int]:
    with _counter_lock:
        return {"hits": _counters["hits"], "misses": _counters["misses"], "errors": _counters["errors"]}


def shared_counters() -> dict[str, int]:
    try:
        values = cache.get_many([SHARED_HITS, SHARED_MISSES])
    except Exception:  # noqa: BLE001
        return {"hits": 0, "misses": 0}
    return {"hits": int(values.get(SHARED_HITS) or 0), "misses": int(values.get(SHARED_MISSES) or 0)}


def reset_counters() -> None:
    with _counter_lock:
        for name in _counters:
            _counters[name] = 0
