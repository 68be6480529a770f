"""The prediction cache: model outputs keyed by (model version id, input hash).

Two levels. Every worker keeps the last ``ML_PREDICTION_CACHE_LOCAL_ENTRIES`` outputs in memory (no
I/O on a hit). With ``REDIS_URL`` set, outputs are also shared through Redis, so a worker finds what
another computed; in the embedded mode (no Redis) the cache is local only: a round trip to the disk
cache per request cost more than the XGBoost call it saves. ``ML_PREDICTION_CACHE_SHARED`` overrides
the choice. Shared values are JSON lists ``[expected_return, prob_up, confidence]``.

The version id in the key is the invalidation: a newly promoted version has another id, so it never
sees the old version's entries (they expire after ``ML_PREDICTION_CACHE_SECONDS``).

Hits and misses are counted in this process (read by ``/health`` through ``selectors.cache_stats``)
and added to shared counters in the cache when the prediction log is flushed, so ``cache_stats()``
also reports every worker's totals (for ``/metrics``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from django.core.cache import cache

from inference import conf
from investml.cache_counters import incr_counter

logger = logging.getLogger(__name__)

PREFIX = "inference:pred"
SHARED_HITS = "inference:cache:hits"
SHARED_MISSES = "inference:cache:misses"

Output = tuple[float, float, float]

_counter_lock = threading.Lock()
_counters = {"hits": 0, "misses": 0, "unsent_hits": 0, "unsent_misses": 0, "errors": 0}
_local_lock = threading.Lock()
_local: OrderedDict[str, tuple[float, Output]] = OrderedDict()  # key -> (expires at, output), LRU order


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


def _error(what: str, exc: Exception) -> None:
    logger.warning("prediction cache %s failed: %s", what, exc)
    with _counter_lock:
        _counters["errors"] += 1


def _remember(outputs: dict[str, Output], ttl: int) -> None:
    expires = time.monotonic() + ttl
    limit = conf.prediction_cache_local_entries()
    with _local_lock:
        for k, value in outputs.items():
            _local[k] = (expires, value)
            _local.move_to_end(k)
        while len(_local) > limit:
            _local.popitem(last=False)


def get_many(version_id: int, hashes: Sequence[str]) -> dict[str, Output]:
    """Cached outputs of the inputs ``hashes`` that are cached (memory first, then one round trip)."""
    if not hashes or conf.prediction_cache_seconds() <= 0:
        return {}
    keys = {key(version_id, h): h for h in hashes}
    out: dict[str, Output] = {}
    now = time.monotonic()
    with _local_lock:
        for k, h in keys.items():
            entry = _local.get(k)
            if entry is not None:
                if entry[0] > now:
                    _local.move_to_end(k)
                    out[h] = entry[1]
                else:
                    del _local[k]
    wanted = [k for k, h in keys.items() if h not in out]
    if wanted and conf.prediction_cache_shared():
        try:
            found = cache.get_many(wanted)
        except Exception as exc:  # noqa: BLE001 - a cache outage only costs speed
            _error("read", exc)
            found = {}
        shared = {}
        for k, value in found.items():
            if isinstance(value, list) and len(value) == 3:
                shared[k] = out[keys[k]] = (float(value[0]), float(value[1]), float(value[2]))
        if shared:
            _remember(shared, conf.prediction_cache_seconds())
    unique = len(set(hashes))
    _count(len(out), unique - len(out))
    return out


def set_many(version_id: int, outputs: dict[str, Output]) -> None:
    ttl = conf.prediction_cache_seconds()
    if not outputs or ttl <= 0:
        return
    payload = {key(version_id, h): tuple(float(v) for v in value) for h, value in outputs.items()}
    _remember(payload, ttl)
    if conf.prediction_cache_shared():
        try:
            cache.set_many({k: list(v) for k, v in payload.items()}, timeout=ttl)
        except Exception as exc:  # noqa: BLE001
            _error("write", exc)


def clear_local() -> None:
    """Forget this process's cached outputs (tests)."""
    with _local_lock:
        _local.clear()


def publish_counters() -> None:
    """Add this process's new hits and misses to the shared counters (called with the log flush)."""
    with _counter_lock:
        hits, misses = _counters["unsent_hits"], _counters["unsent_misses"]
        _counters["unsent_hits"] = _counters["unsent_misses"] = 0
    try:
        if hits:
            incr_counter(SHARED_HITS, hits)
        if misses:
            incr_counter(SHARED_MISSES, misses)
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
