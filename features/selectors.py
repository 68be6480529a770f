"""Reads of the feature store: feature-set versions, the offline training frame, the online vectors.

The contract the training and inference code call:

* ``training_frame(*, feature_set_version=None, start=None, end=None, tickers=None, horizons=(1, 5))``
  -> ``ticker, date, <feature columns>, adj_close, fwd_ret_1, fwd_dir_1, fwd_ret_5, fwd_dir_5``;
* ``latest_feature_vectors(*, tickers=None)`` -> the latest stored feature row per ticker;
* ``feature_columns(*, version)`` -> the ordered feature columns of a version;
* ``get_online_features(*, ticker)`` -> ``OnlineVector | None`` from the Django cache.

A version argument is a ``FeatureSetVersion``, its id, ``"1.2.0"`` (of the default set) or
``"name@1.2.0"``; None means the latest built version of the default set (the version of its most
recent successful materialization).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.core.cache import cache

from features.labels import compute_labels
from features.models import BenchmarkReturn, FeatureMaterialization, FeatureSetVersion
from features.store import FeatureStore
from features.versioning import content_hash

__all__ = [
    "DEFAULT_FEATURE_SET",
    "OnlineVector",
    "benchmark_returns",
    "feature_columns",
    "feature_store_for",
    "get_online_features",
    "configured_feature_set",
    "get_online_features_many",
    "latest_feature_set_version",
    "latest_feature_vectors",
    "resolve_feature_set_version",
    "training_frame",
]

DEFAULT_FEATURE_SET = "default"
ONLINE_PREFIX = "features:online"

VersionRef = FeatureSetVersion | int | str | None


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


def configured_feature_set() -> str:
    """The feature set the pipeline builds, trains on and serves (``training.feature_set``)."""
    return settings.PIPELINE_CONFIG.training.feature_set


def latest_feature_set_version(*, name: str | None = None) -> FeatureSetVersion | None:
    """The version of the feature set's (default: the configured one) most recent successful
    materialization, else None."""
    name = name or configured_feature_set()
    mat = (
        FeatureMaterialization.objects.filter(
            version__feature_set__name=name, status=FeatureMaterialization.Status.SUCCEEDED
        )
        .select_related("version__feature_set")
        .order_by("-id")
        .first()
    )
    return mat.version if mat is not None else None


def resolve_feature_set_version(*, version: VersionRef = None,
                                feature_set: str | None = None) -> FeatureSetVersion:
    """A ``FeatureSetVersion`` from any accepted reference (a bare number or None within
    ``feature_set``, default the configured one); DoesNotExist names what is missing."""
    if isinstance(version, FeatureSetVersion):
        return version
    feature_set = feature_set or configured_feature_set()
    qs = FeatureSetVersion.objects.select_related("feature_set")
    if version is None:
        found = latest_feature_set_version(name=feature_set)
        if found is None:
            raise FeatureSetVersion.DoesNotExist(
                f"feature set {feature_set!r} has no successful build: run `manage.py build_features`"
            )
        return found
    if isinstance(version, int) or (isinstance(version, str) and version.isdigit()):
        try:
            return qs.get(pk=int(version))
        except FeatureSetVersion.DoesNotExist:
            raise FeatureSetVersion.DoesNotExist(f"no feature set version with id {version}") from None
    name, _, number = str(version).rpartition("@")
    name = name or feature_set
    try:
        return qs.get(feature_set__name=name, version=number)
    except FeatureSetVersion.DoesNotExist:
        raise FeatureSetVersion.DoesNotExist(f"no feature set version {name}@{number}") from None


def feature_columns(*, version: VersionRef) -> list[str]:
    """Ordered feature columns of a version (what ``training_frame`` returns between date and labels)."""
    return resolve_feature_set_version(version=version).feature_names


def feature_store_for(*, version: FeatureSetVersion) -> FeatureStore:
    """The offline store of a version, under ``ML_FEATURES_PATH/<feature set>/<version>``."""
    return FeatureStore.at(
        settings.ML_FEATURES_PATH, version.feature_set.name, version.version, feature_columns=version.feature_names,
        cs_normalization=(version.params or {}).get("cs_normalization", "none"),
    )


def storage_path(*, version: FeatureSetVersion) -> str:
    """The store's path relative to ML_FEATURES_PATH."""
    return f"{version.feature_set.name}/{version.version}"


# --------------------------------------------------------------------------------------------
# Offline reads
# --------------------------------------------------------------------------------------------


def _tickers(tickers: Iterable[str] | str | None) -> list[str] | None:
    if tickers is None:
        return None
    if isinstance(tickers, str):
        tickers = tickers.split(",")
    return sorted({t.strip().upper() for t in tickers if t and t.strip()})


def training_frame(
    *,
    feature_set_version: VersionRef = None,
    start: Any = None,
    end: Any = None,
    tickers: Iterable[str] | None = None,
    horizons: Iterable[int] = (1, 5),
) -> pd.DataFrame:
    """Point-in-time features joined with forward labels, one row per (ticker, date).

    Columns: ``ticker`` (str), ``date`` (datetime64[ns]), the version's feature columns (float32,
    each computed from data dated <= date), ``adj_close`` (float64), then ``fwd_ret_h``, ``fwd_dir_h``
    per horizon (float64; NaN where the h-th next bar of the ticker was not stored yet). Sorted by
    (ticker, date). Labels look ahead by design: never use them as features. Horizons other than the
    stored ones (1 and 5) are computed from the stored adj_close.
    """
    version = resolve_feature_set_version(version=feature_set_version)
    store = feature_store_for(version=version)
    names = _tickers(tickers)
    hs = [int(h) for h in horizons]
    label_cols = [c for h in hs for c in (f"fwd_ret_{h}", f"fwd_dir_{h}")]
    for attempt in range(3):
        manifest = store.manifest()
        stored_labels = set(store.columns("labels", manifest))
        try:
            feats = store.read("features", start=start, end=end, tickers=names, manifest=manifest)
            if set(label_cols) <= stored_labels:
                labels = store.read("labels", columns=["adj_close", *label_cols], start=start, end=end,
                                    tickers=names, manifest=manifest)
            else:
                prices = store.read("labels", columns=["adj_close"], start=start, tickers=names, manifest=manifest)
                labels = _labels_from_prices(prices, hs, end)
        except OSError:  # a build replaced files under us: read the new manifest
            if attempt == 2:
                raise
            continue
        break
    labels = labels[["ticker", "date", "adj_close", *label_cols]]
    same_keys = len(feats) == len(labels) and np.array_equal(
        feats["date"].to_numpy(), labels["date"].to_numpy()
    ) and np.array_equal(feats["ticker"].to_numpy(), labels["ticker"].to_numpy())
    if same_keys:
        out = feats.reset_index(drop=True)
        for col in ["adj_close", *label_cols]:
            out[col] = labels[col].to_numpy()
    else:
        out = feats.merge(labels, on=["ticker", "date"], how="left", sort=False)
    return out[["ticker", "date", *version.feature_names, "adj_close", *label_cols]]


def _labels_from_prices(prices: pd.DataFrame, horizons: list[int], end: Any) -> pd.DataFrame:
    bars = prices[["ticker", "date", "adj_close"]]
    lab = compute_labels(bars, horizons)  # same (ticker, date) order as the store's rows
    lab.insert(2, "adj_close", bars["adj_close"].to_numpy())
    lab["ticker"] = lab["ticker"].astype(str)
    if end is not None:
        lab = lab.loc[lab["date"] <= pd.Timestamp(end)].reset_index(drop=True)
    return lab


def latest_feature_vectors(*, tickers: Iterable[str] | None = None,
                           feature_set_version: VersionRef = None) -> pd.DataFrame:
    """The latest stored feature row of each ticker: ``ticker, date, <feature columns>``."""
    version = resolve_feature_set_version(version=feature_set_version)
    frame = feature_store_for(version=version).latest_rows(tickers=_tickers(tickers))
    return frame[["ticker", "date", *version.feature_names]]


def benchmark_returns(*, symbol: str = "SPY") -> pd.Series:
    """Daily returns of a benchmark, indexed by date (datetime64), sorted."""
    rows = list(BenchmarkReturn.objects.filter(symbol=symbol).order_by("date").values_list("date", "ret"))
    if not rows:
        return pd.Series(dtype=np.float64, index=pd.DatetimeIndex([]), name="ret")
    dates, rets = zip(*rows, strict=True)
    return pd.Series(np.asarray(rets, dtype=np.float64), index=pd.DatetimeIndex(dates), name="ret")


# --------------------------------------------------------------------------------------------
# Online store (Django cache)
# --------------------------------------------------------------------------------------------


def online_vector_key(version_id: int, ticker: str) -> str:
    return f"{ONLINE_PREFIX}:{version_id}:{ticker}"


def online_index_key(feature_set: str) -> str:
    """JSON: feature set, version id and number, columns, columns hash, tickers, updated_at."""
    return f"{ONLINE_PREFIX}:index:{feature_set}"


def online_current_key(feature_set: str) -> str:
    """The id of the version the online store serves for a feature set (a tiny key, read per call)."""
    return f"{ONLINE_PREFIX}:current:{feature_set}"


def online_columns_key(version_id: int) -> str:
    return f"{ONLINE_PREFIX}:columns:{version_id}"


def online_absent_key(version_id: int, ticker: str) -> str:
    """Set by a read-through that found no stored row: the offline store is not read again soon."""
    return f"{ONLINE_PREFIX}:absent:{version_id}:{ticker}"


def online_payload(*, version: FeatureSetVersion, frame: pd.DataFrame) -> dict[str, str]:
    """Cache key -> JSON vector of each row of ``frame`` (``ticker, date, <feature columns>``)."""
    columns = version.feature_names
    chash = content_hash({"columns": list(columns)})
    name = version.feature_set.name
    values = frame[columns].to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    dates = frame["date"].dt.strftime("%Y-%m-%d").to_numpy()
    payload = {}
    for i, ticker in enumerate(frame["ticker"].to_numpy()):
        row = [float(v) if ok else None for v, ok in zip(values[i].tolist(), finite[i].tolist(), strict=True)]
        payload[online_vector_key(version.pk, ticker)] = json.dumps(
            {"date": dates[i], "values": row, "columns_hash": chash, "version_id": version.pk,
             "version": version.version, "feature_set": name},
            separators=(",", ":"),
        )
    return payload


@dataclass(frozen=True)
class OnlineVector:
    ticker: str
    date: date
    values: list[float | None]  # None where the feature is undefined (NaN offline)
    columns: list[str]
    columns_hash: str
    version_id: int
    version: str
    feature_set: str

    def as_dict(self) -> dict[str, float | None]:
        return dict(zip(self.columns, self.values, strict=True))

    def as_array(self) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in self.values], dtype=np.float64)


_COLUMNS_MEMO: dict[int, list[str]] = {}  # a version's columns never change


def _online_columns(version_id: int) -> list[str]:
    cols = _COLUMNS_MEMO.get(version_id)
    if cols is None:
        raw = cache.get(online_columns_key(version_id))
        if raw is not None:
            cols = json.loads(raw)
        else:
            cols = FeatureSetVersion.objects.get(pk=version_id).feature_names
        _COLUMNS_MEMO[version_id] = cols
    return cols


def _online_version_id(version: VersionRef, feature_set: str | None) -> int | None:
    feature_set = feature_set or configured_feature_set()
    if version is None:
        raw = cache.get(online_current_key(feature_set))
        return int(raw) if raw is not None else None
    if isinstance(version, FeatureSetVersion):
        return version.pk
    if isinstance(version, int):
        return version
    return resolve_feature_set_version(version=version, feature_set=feature_set).pk


def _vector(ticker: str, raw: str | bytes) -> OnlineVector:
    data = json.loads(raw)
    vid = int(data["version_id"])
    return OnlineVector(
        ticker=ticker,
        date=date.fromisoformat(data["date"]),
        values=data["values"],
        columns=_online_columns(vid),
        columns_hash=data["columns_hash"],
        version_id=vid,
        version=data["version"],
        feature_set=data["feature_set"],
    )


def get_online_features(*, ticker: str, version: VersionRef = None,
                        feature_set: str | None = None) -> OnlineVector | None:
    """The latest feature vector of ``ticker`` from the online store, or None.

    Without ``version`` it serves the version of the feature set's last build (two cache reads);
    with one (what the model was trained on) a single read. No database access on the hot path.
    """
    vid = _online_version_id(version, feature_set)
    if vid is None:
        return None
    symbol = ticker.strip().upper()
    raw = cache.get(online_vector_key(vid, symbol))
    if raw is None:
        return _read_through(vid, [symbol]).get(symbol)
    return _vector(symbol, raw)


def get_online_features_many(*, tickers: Iterable[str], version: VersionRef = None,
                             feature_set: str | None = None) -> dict[str, OnlineVector]:
    """Vectors of several tickers in one cache round trip (missing tickers are left out)."""
    vid = _online_version_id(version, feature_set)
    if vid is None:
        return {}
    symbols = [t.strip().upper() for t in tickers]
    raws = cache.get_many([online_vector_key(vid, s) for s in symbols])
    out = {}
    for s in symbols:
        raw = raws.get(online_vector_key(vid, s))
        if raw is not None:
            out[s] = _vector(s, raw)
    if len(out) < len(set(symbols)):
        out.update(_read_through(vid, [s for s in symbols if s not in out]))
    return out


def _read_through(vid: int, symbols: list[str]) -> dict[str, OnlineVector]:
    """Vectors the cache lacks, from the offline store, cached for ``ML_ONLINE_READTHROUGH_SECONDS``.

    The online store is a cache of the offline store's latest rows. A machine whose cache is not
    the one the build published to (an API server on another machine without a shared Redis, a
    flushed Redis) reads them here once; the timeout bounds how stale such a copy can get, while
    a build's own publish stays without one. Tickers with no stored row are remembered as absent
    for the same time, so unknown tickers do not re-read the store on every request.
    """
    ttl = int(getattr(settings, "ML_ONLINE_READTHROUGH_SECONDS", 300))
    if ttl <= 0 or not symbols:
        return {}
    wanted = sorted(set(symbols))
    absent = cache.get_many([online_absent_key(vid, s) for s in wanted])
    wanted = [s for s in wanted if online_absent_key(vid, s) not in absent]
    if not wanted:
        return {}
    version = FeatureSetVersion.objects.select_related("feature_set").filter(pk=vid).first()
    if version is None:
        return {}
    frame = feature_store_for(version=version).latest_rows(tickers=wanted)
    payload = online_payload(version=version, frame=frame)
    found = {s: payload[online_vector_key(vid, s)] for s in wanted if online_vector_key(vid, s) in payload}
    cache.set_many(payload, timeout=ttl)
    cache.set_many({online_absent_key(vid, s): "1" for s in wanted if s not in found}, timeout=ttl)
    return {s: _vector(s, raw) for s, raw in found.items()}
