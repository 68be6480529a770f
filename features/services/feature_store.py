"""The offline feature store's writes: builds into it (each one recorded as a ``FeatureMaterialization``)
and exports out of it.

A build resolves the tickers and the feature-set version, reads its inputs chunk by chunk
(``features.services.build_inputs``), runs the framework-free pipeline of ``features.build``, which
commits the Parquet files atomically, records the run and refreshes the online store
(``features.services.online_store``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.db.models import Exists, OuterRef
from django.utils import timezone

from features.build import materialize
from features.feature_sets import FeatureSpec
from features.models import FeatureMaterialization, PriceBar, Ticker
from features.selectors import (
    configured_feature_set,
    feature_store_for,
    resolve_feature_set_version,
    storage_path,
)
from features.services.benchmark_returns import MARKET_SYMBOL
from features.services.build_inputs import (
    full_chunks,
    incremental_chunks,
    incremental_plan,
    market_series,
    universe_dates,
)
from features.services.feature_set_versions import version_for_build
from features.services.online_store import publish_online_features
from features.services.store_errors import FeatureStoreError
from features.store_format import ReplaceScope, atomic_write_bytes

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

DEFAULT_CHUNK_SIZE = 500


def _log(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
    else:
        logger.info(message)


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------


@dataclass
class BuildSummary:
    feature_set: str
    version: str
    version_id: int
    materialization_id: int | None
    mode: str
    tickers: int = 0
    rows: int = 0
    label_rows: int = 0
    files_written: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    start_date: date | None = None
    end_date: date | None = None
    checksum: str = ""
    storage_path: str = ""
    market_days: dict[str, int] = field(default_factory=dict)
    online_vectors: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        what = "nothing new" if self.rows == 0 else f"{self.rows:,} rows"
        return (
            f"{self.feature_set}@{self.version} {self.mode} build: {self.tickers:,} tickers, {what} "
            f"in {self.seconds:.1f}s ({self.rows_per_second:,.0f} rows/s), {self.files_written} files"
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start_date"] = self.start_date.isoformat() if self.start_date else None
        d["end_date"] = self.end_date.isoformat() if self.end_date else None
        d["seconds"] = round(self.seconds, 3)
        d["rows_per_second"] = round(self.rows_per_second, 1)
        return d


def _as_date(value: Any, name: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise FeatureStoreError(f"invalid {name} date {value!r}: expected YYYY-MM-DD") from None


def _resolve_scope(tickers: Iterable[str] | None, start: date | None, end: date | None) -> tuple[dict[str, int], bool]:
    """(symbol -> ticker id of the tickers to build, explicit?). Raises on unknown tickers or no bars."""
    bars = PriceBar.objects.all()
    if start is not None:
        bars = bars.filter(date__gte=start)
    if end is not None:
        bars = bars.filter(date__lte=end)
    between = f" between {start or 'the first bar'} and {end or 'the last bar'}"
    if tickers is None:
        has_bars = Exists(bars.filter(ticker=OuterRef("pk")))
        scope = dict(Ticker.objects.filter(has_bars).order_by("symbol").values_list("symbol", "id"))
        if not scope:
            hint = "" if PriceBar.objects.exists() else ": ingest prices first"
            raise FeatureStoreError(f"no bars{between}{hint}")
        return scope, False
    wanted = sorted({t.strip().upper() for t in tickers if t and t.strip()})
    if not wanted:
        raise FeatureStoreError("no tickers given")
    scope = dict(Ticker.objects.filter(symbol__in=wanted).order_by("symbol").values_list("symbol", "id"))
    unknown = [t for t in wanted if t not in scope]
    if unknown:
        raise FeatureStoreError(f"unknown ticker{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    with_bars = set(bars.filter(ticker_id__in=scope.values()).order_by().values_list("ticker_id", flat=True).distinct())
    empty = [s for s, i in scope.items() if i not in with_bars]
    if empty:
        raise FeatureStoreError(f"no bars for {', '.join(empty)}{between}")
    return scope, True


def build_features(
    *,
    feature_set: str | None = None,
    start: Any = None,
    end: Any = None,
    tickers: Iterable[str] | None = None,
    full: bool = False,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> BuildSummary:
    """Materialize features and labels of ``feature_set`` into the offline store, then refresh the
    online store.

    Full (``full=True``, or nothing stored yet): every bar of the tickers (all with bars when
    ``tickers`` is None) up to ``end``; rows in [start, end] replace the stored ones of those tickers.
    Incremental: per ticker, only the dates after its last stored date (from ``MAX_LOOKBACK`` bars of
    history), merged into the month partitions; values equal a full rebuild's. Nothing new: nothing
    is written. Every run is recorded as a ``FeatureMaterialization`` (failed, with the error, when
    it raises).
    """
    started = time.perf_counter()
    start_d, end_d = _as_date(start, "start"), _as_date(end, "end")
    if start_d and end_d and start_d > end_d:
        raise FeatureStoreError(f"start {start_d} is after end {end_d}")
    if chunk_size < 1:
        raise FeatureStoreError("chunk size must be at least 1")
    if isinstance(tickers, str):
        tickers = tickers.split(",")
    scope, explicit = _resolve_scope(tickers, start_d, end_d)
    version = version_for_build(feature_set=feature_set or configured_feature_set())
    spec = FeatureSpec.from_params(version.params)
    store = feature_store_for(version=version)
    incremental = not full and bool(store.last_dates())
    mode = FeatureMaterialization.Mode.INCREMENTAL if incremental else FeatureMaterialization.Mode.FULL
    rel = storage_path(version=version)
    mat = FeatureMaterialization.objects.create(
        version=version, mode=mode, start_date=start_d, end_date=end_d, tickers=len(scope),
        ticker_scope=",".join(scope) if explicit else "", storage_path=rel,
    )
    summary = BuildSummary(feature_set=version.feature_set.name, version=version.version, version_id=version.pk,
                           materialization_id=mat.pk, mode=mode, storage_path=rel)
    _log(progress, f"{summary.feature_set}@{version.version}: {mode} build of {len(scope):,} tickers "
         f"into {rel} (chunks of {chunk_size})")
    try:
        if incremental:
            plan = incremental_plan(store=store, scope=scope, start=start_d, end=end_d)
            if not plan:
                summary.tickers = 0
                result = None
            else:
                stored_market = store.market()
                after = stored_market.index.max().date() if stored_market is not None and len(stored_market) else None
                dates = universe_dates(after=after, end=end_d)
                returns, source, summary.market_days = market_series(dates=dates, stored=stored_market)
                chunks = incremental_chunks(scope=scope, since=plan, end=end_d, lookback=spec.max_lookback(),
                                            chunk_size=chunk_size, social=bool(spec.social_windows))
                result = materialize(
                    store=store, chunks=chunks, spec=spec, market_returns=returns, market_source=source,
                    incremental=True, start=start_d, end=end_d, tag=f"m{mat.pk}",
                    total_chunks=math.ceil(len(plan) / chunk_size), progress=progress,
                )
        else:
            dates = universe_dates(after=None, end=end_d)
            returns, source, summary.market_days = market_series(dates=dates, stored=None)
            replace = ReplaceScope(tickers=frozenset(scope) if explicit else None, start=start_d, end=end_d)
            result = materialize(
                store=store, chunks=full_chunks(scope=scope, end=end_d, chunk_size=chunk_size,
                                                social=bool(spec.social_windows)), spec=spec,
                market_returns=returns, market_source=source, incremental=False, replace=replace,
                start=start_d, end=end_d, tag=f"m{mat.pk}", total_chunks=math.ceil(len(scope) / chunk_size),
                progress=progress,
            )
        if summary.market_days.get("equal_weighted"):
            _log(progress, f"market: {MARKET_SYMBOL} missing on {summary.market_days['equal_weighted']} day(s), "
                 "equal-weighted universe return used there (ingest_benchmark fills it)")
        if result is not None:
            commit = result.commit
            summary.tickers, summary.rows, summary.label_rows = commit.tickers, commit.rows, commit.label_rows
            summary.files_written, summary.bytes_written = len(commit.files_written), commit.bytes_written
            summary.checksum = commit.checksum
            summary.start_date, summary.end_date = commit.min_date, commit.max_date
        # A build of some tickers (a chunk of a fanned-out build) changes only their vectors, unless
        # the version normalizes each date across stocks: then every stored vector of the day moved.
        narrow = explicit and spec.cs_normalization == "none"
        summary.online_vectors = publish_online_features(version=version, tickers=list(scope) if narrow else None)
    except Exception as exc:
        mat.status = FeatureMaterialization.Status.FAILED
        mat.error = f"{type(exc).__name__}: {exc}"
        mat.finished_at = timezone.now()
        mat.duration_seconds = time.perf_counter() - started
        mat.save()
        raise
    summary.seconds = time.perf_counter() - started
    mat.status = FeatureMaterialization.Status.SUCCEEDED
    mat.tickers = summary.tickers
    mat.rows = summary.rows
    mat.files_written = summary.files_written
    mat.checksum = summary.checksum
    if summary.start_date:
        mat.start_date, mat.end_date = summary.start_date, summary.end_date
    mat.finished_at = timezone.now()
    mat.duration_seconds = summary.seconds
    mat.save()
    store.vacuum(min_age_s=86_400)
    if progress is None:
        logger.info(summary.line())
    return summary


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_feature_matrix(*, path: Path, feature_set_version: Any = None, start: Any = None, end: Any = None,
                          tickers: Iterable[str] | None = None) -> int:
    """Write ``ticker, date, <every feature column>`` for the selection to one Parquet file
    (atomically: temporary file, fsync, rename). Returns the number of rows."""
    version = resolve_feature_set_version(version=feature_set_version)
    if isinstance(tickers, str):
        tickers = tickers.split(",")
    names = sorted({t.strip().upper() for t in tickers}) if tickers is not None else None
    frame = feature_store_for(version=version).read(
        "features", start=_as_date(start, "start"), end=_as_date(end, "end"), tickers=names
    )
    frame = frame[["ticker", "date", *version.feature_names]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(1, "date", table["date"].cast(pa.date32()))
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"investml.feature_set": f"{version.feature_set.name}@{version.version}".encode()}
    )
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="snappy")
    atomic_write_bytes(Path(path), buf.getvalue(), fsync=True)
    return len(frame)

