"""Offline feature store: Parquet datasets per feature-set version. Framework-free (no Django).

Layout of one version (``root = ML_FEATURES_PATH/<feature_set>/<version>``)::

    _manifest.json                                   the commit point (see below)
    .lock                                            flock'ed by a writer while it commits
    features/year=YYYY/month=MM/part-<id>.parquet    ticker, date, <feature columns> (float32)
    labels/year=YYYY/month=MM/part-<id>.parquet      ticker, date, adj_close, fwd_ret_h, fwd_dir_h (float64)
    market/market-<id>.parquet                       date, ret, source: the market series the build used
    xsection/year=YYYY/month=MM/part-<id>.parquet    date, median:<col>, scale:<col> (float64): each
                                                     date's cross-section statistics, only in a version
                                                     whose spec normalizes per date (below)

* Features and labels are separate datasets with the same keys (ticker, date): a label looks ahead
  by design and must never be read as a feature.
* Partitioned by month, so a daily update rewrites only the current month (and, for labels, the
  previous month during its first days). Rows inside a file are sorted by (ticker, date).
* Stored features are float32 (``STORE_DTYPE``): the engine computes in float64 and rounds once,
  so an incremental build and a full rebuild store the same float32 values (the float64 results
  agree to 1e-9; the rounding of two values that close only differs on a float32 tie boundary).
  Labels and adj_close stay float64.
* Atomic commits. Part files are written to a temporary name and renamed; they are invisible until
  ``_manifest.json`` names them. A commit (under an exclusive ``flock``) fsyncs every new file and
  its folder, then replaces the manifest (temp file, fsync, rename, fsync folder), and only then
  deletes the files it superseded. A reader holding the old manifest sees the old, complete
  version; a failed or killed writer leaves only unreferenced files (``vacuum`` removes them).
* Checksums: the manifest records each file's sha256, row count, date and ticker range; the
  checksum of a set of files is the sha256 over "<relative path> <sha256>" lines in path order
  (``files_checksum``). ``verify`` re-hashes every live file.
* ``last_dates`` in the manifest: the last stored date per ticker, which drives incremental builds.
* Cross-sectional normalization (``FeatureSpec.cs_normalization``, ``features.normalize``): the
  features dataset keeps the raw values; every commit recomputes the statistics of each month it
  touched from all the stored stocks of that month, in the same commit, and ``read("features")``
  returns normalized values. Every reader (training frames, latest rows, sequences, the online
  store, drift) therefore sees the same transform, and a build of a few tickers re-normalizes the
  days it changed.

The build pipeline (``compute_chunk``, ``materialize``) is here too, so that the Django service and
the benchmark run the same code: chunks of bars in, Parquet out.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features import storage
from features.engine import FeatureSpec, compute_features, compute_features_incremental
from features.labels import compute_labels
from features.normalize import CS_NORMALIZATIONS, cs_apply, cs_stats

__all__ = [
    "LABEL_HORIZONS",
    "STORE_DTYPE",
    "ChunkData",
    "ChunkResult",
    "CommitResult",
    "FeatureStore",
    "MaterializeResult",
    "ReplaceScope",
    "StoreWriter",
    "atomic_write_bytes",
    "combine_market",
    "compute_chunk",
    "content_hash",
    "equal_weighted_returns",
    "feature_definitions",
    "files_checksum",
    "label_store_columns",
    "materialize",
    "next_version",
    "sha256_file",
    "version_content",
]

STORE_FORMAT = 1
STORE_DTYPE = np.float32
LABEL_HORIZONS: tuple[int, ...] = (1, 5)
MANIFEST = "_manifest.json"
COMPRESSION = "snappy"
DATASETS = ("features", "labels")
XSECTION = "xsection"
KEY_COLUMNS = ["ticker", "date"]

Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Feature-set content: the ordered feature list with parameters, its hash, version bumps
# --------------------------------------------------------------------------------------------


def _suffix_int(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def feature_definitions(spec: FeatureSpec) -> list[dict[str, Any]]:
    """The ordered feature list ``[{name, group, params}]`` of a spec (``spec.columns()`` order)."""
    s = spec
    macd = {"fast": s.macd_fast, "slow": s.macd_slow, "signal": s.macd_signal, "input": "adj_close"}
    bb = {"period": s.bb_period, "nstd": s.bb_nstd, "input": "adj_close"}

    def params_of(name: str, group: str) -> dict[str, Any]:
        if group == "technical":
            if name.startswith("rsi_"):
                return {"period": s.rsi_period, "input": "adj_close"}
            if name.startswith("macd"):
                return dict(macd)
            if name.startswith("bb_"):
                return dict(bb)
            if name.startswith(("sma_", "ema_", "close_to_sma_", "close_to_ema_")):
                return {"period": _suffix_int(name), "input": "adj_close"}
            if name.startswith("ret_"):
                return {"horizon": _suffix_int(name), "kind": "simple"}
            if name.startswith("atr_"):
                return {"period": s.atr_period, "input": "adjusted high/low/close"}
            if name.startswith("obv_"):
                return {"window": s.obv_window, "kind": "windowed, signed volume / volume"}
        if group == "market":
            if name.startswith("vol_"):
                return {"window": _suffix_int(name), "annualization": s.annualization, "kind": "log returns"}
            if name.startswith("volume_"):
                return {"window": s.volume_window}
            if name.startswith(("beta_", "corr_")):
                return {"window": s.beta_window, "min_obs": s.beta_min_obs, "market": "SPY else equal-weighted"}
            if name.startswith("rel_ret_"):
                return {"window": s.rel_ret_window}
        if group == "fundamentals":
            return {"join": "latest snapshot dated strictly before the bar"}
        if group == "alpha158":
            tail = name.rsplit("_", 1)[1]
            return {"family": "Qlib Alpha158", "window": int(tail)} if tail.isdigit() else {"family": "Qlib Alpha158"}
        if group == "sentiment":
            if name.startswith(("sent_mean_", "news_count_")):
                return {"window": _suffix_int(name)}
        if group == "social":
            kind = name.split("_")[1]
            return {"window": _suffix_int(name), "kind": kind, "posts": "after the 16:00 close: next session"}
        return {}

    return [
        {"name": name, "group": group, "params": params_of(name, group)}
        for group, names in spec.groups().items()
        for name in names
    ]


def version_content(spec: FeatureSpec) -> dict[str, Any]:
    """Everything a feature-set version pins: features, engine parameters, storage format."""
    return {
        "features": feature_definitions(spec),
        "params": spec.to_dict(),
        "storage": {
            "format": STORE_FORMAT,
            "dtype": np.dtype(STORE_DTYPE).name,
            "label_horizons": list(LABEL_HORIZONS),
        },
    }


def content_hash(content: dict[str, Any]) -> str:
    """sha256 over canonical JSON (sorted keys, no whitespace)."""
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _parse_semver(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in version.split("."))
    return major, minor, patch


def next_version(
    previous_version: str | None,
    previous_features: list[dict[str, Any]] | None,
    previous_params: dict[str, Any] | None,
    new_features: list[dict[str, Any]],
    new_params: dict[str, Any],
) -> str:
    """Semantic version of a new content, relative to the highest existing version.

    * major: a feature was removed or renamed (a consumer's column disappears);
    * minor: features added or reordered, or a parameter changed (a feature's or an engine one);
    * patch: same features and parameters, other stored content changed (storage format, labels).
    """
    if previous_version is None:
        return "1.0.0"
    major, minor, patch = _parse_semver(previous_version)
    old = {f["name"]: f for f in previous_features or []}
    new = {f["name"]: f for f in new_features}
    if set(old) - set(new):
        return f"{major + 1}.0.0"
    changed = (
        list(old) != list(new)
        or any(old[n] != new[n] for n in old)
        or (previous_params or {}) != new_params
    )
    if changed:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def label_store_columns(horizons: Iterable[int] = LABEL_HORIZONS) -> list[str]:
    """Columns of the labels dataset after ticker and date: adj_close, then per horizon ret, dir."""
    cols = ["adj_close"]
    for h in horizons:
        cols += [f"fwd_ret_{int(h)}", f"fwd_dir_{int(h)}"]
    return cols


# --------------------------------------------------------------------------------------------
# Files: atomic writes and checksums
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path, *, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def files_checksum(files: Iterable[tuple[str, str]]) -> str:
    """sha256 over "<relative path> <file sha256>" lines sorted by path; "" for no files."""
    lines = sorted(f"{rel} {sha}" for rel, sha in files)
    if not lines:
        return ""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


_fsync_path = storage.fsync_path


def atomic_write_bytes(path: Path, data: Any, *, fsync: bool = True) -> None:
    """Write ``data`` (bytes-like) to ``path`` through a temporary file in the same folder.

    The temporary file is fsynced (when ``fsync``) and renamed over ``path``; on any failure it is
    removed, so ``path`` is either absent, the old file, or the complete new one.
    """
    storage.atomic_write_local(path, data, fsync=fsync)


def _to_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return pd.Timestamp(value).date()


def _days(values: Any) -> np.ndarray:
    """int64 day numbers (since 1970-01-01) of a date column or array."""
    if isinstance(values, pd.Series):
        if pd.api.types.is_datetime64_any_dtype(values) and getattr(values.dt, "tz", None) is None:
            arr = values.to_numpy()
        else:
            arr = pd.to_datetime(values).to_numpy()
    else:
        arr = np.asarray(values)
        if not np.issubdtype(arr.dtype, np.datetime64):
            arr = pd.to_datetime(arr).to_numpy()
    return arr.astype("datetime64[D]").astype(np.int64)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _day_to_date(day: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + int(day))


# --------------------------------------------------------------------------------------------
# Frames <-> Parquet
# --------------------------------------------------------------------------------------------


def _encode_table(table: pa.Table) -> tuple[pa.Buffer, str]:
    buf = pa.BufferOutputStream()
    pq.write_table(
        table, buf, compression=COMPRESSION, use_dictionary=["ticker"], write_statistics=["ticker", "date"]
    )
    data = buf.getvalue()
    return data, hashlib.sha256(memoryview(data)).hexdigest()


@dataclass
class _Slice:
    month: int  # months since 1970-01
    table: pa.Table
    min_ticker: str
    max_ticker: str
    min_day: int
    max_day: int


def _month_slices(frame: pd.DataFrame, columns: list[str], dtype: Any) -> list[_Slice]:
    """Split a (ticker, date)-sorted frame by calendar month into Arrow tables (rows stay sorted)."""
    n = len(frame)
    if n == 0:
        return []
    days = _days(frame["date"])
    months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    codes, uniques = pd.factorize(frame["ticker"], sort=True)
    symbols = np.asarray(pd.Index(uniques).astype(str), dtype=object)
    order = None if np.all(months[1:] >= months[:-1]) else np.argsort(months, kind="stable")

    def take(a: np.ndarray) -> np.ndarray:
        return a if order is None else a[order]

    months_s, codes_s, days_s = take(months), take(codes.astype(np.int32)), take(days)
    values = [take(frame[c].to_numpy(dtype=dtype, na_value=np.nan)) for c in columns]
    cuts = np.flatnonzero(months_s[1:] != months_s[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [n]])
    sym_arr = pa.array(symbols, pa.string())
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        c = codes_s[a:b]
        present = symbols[np.unique(c)]
        ticker = pa.DictionaryArray.from_arrays(pa.array(c, pa.int32()), sym_arr).cast(pa.string())
        dates = pa.array(days_s[a:b].astype("datetime64[D]"), pa.date32())
        arrays = [ticker, dates, *(pa.array(v[a:b]) for v in values)]
        table = pa.Table.from_arrays(arrays, names=[*KEY_COLUMNS, *columns])
        out.append(
            _Slice(
                month=int(months_s[a]),
                table=table,
                min_ticker=str(min(present)),
                max_ticker=str(max(present)),
                min_day=int(days_s[a:b].min()),
                max_day=int(days_s[a:b].max()),
            )
        )
    return out


def _table_to_frame(table: pa.Table) -> pd.DataFrame:
    if "date" in table.column_names:
        i = table.column_names.index("date")
        table = table.set_column(i, "date", pc.cast(table["date"], pa.timestamp("ns")))
    if "ticker" in table.column_names and pa.types.is_dictionary(table.schema.field("ticker").type):
        i = table.column_names.index("ticker")
        table = table.set_column(i, "ticker", pc.cast(table["ticker"], pa.string()))
    return table.to_pandas()


def _empty_frame(columns: list[str], dtypes: dict[str, Any]) -> pd.DataFrame:
    data = {}
    for c in columns:
        if c == "ticker":
            data[c] = pd.Series(dtype=object)
        elif c == "date":
            data[c] = pd.Series(dtype="datetime64[ns]")
        else:
            data[c] = pd.Series(dtype=dtypes.get(c, np.float64))
    return pd.DataFrame(data)


# --------------------------------------------------------------------------------------------
# Replace scope (what a full rebuild supersedes)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplaceScope:
    """Rows a full build supersedes: ``tickers`` (None = all) with dates in [start, end] (None = open)."""

    tickers: frozenset[str] | None = None
    start: date | None = None
    end: date | None = None

    def _date_ok(self, d: date) -> bool:
        return (self.start is None or d >= self.start) and (self.end is None or d <= self.end)

    def touches(self, entry: dict[str, Any]) -> bool:
        lo, hi = date.fromisoformat(entry["min_date"]), date.fromisoformat(entry["max_date"])
        if (self.start is not None and hi < self.start) or (self.end is not None and lo > self.end):
            return False
        if self.tickers is None:
            return True
        return any(entry["min_ticker"] <= t <= entry["max_ticker"] for t in self.tickers)

    def covers(self, entry: dict[str, Any]) -> bool:
        if self.tickers is not None:
            return False
        lo, hi = date.fromisoformat(entry["min_date"]), date.fromisoformat(entry["max_date"])
        return (self.start is None or lo >= self.start) and (self.end is None or hi <= self.end)

    def covers_row(self, ticker: str, d: date) -> bool:
        return (self.tickers is None or ticker in self.tickers) and self._date_ok(d)

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        m = np.ones(len(frame), dtype=bool)
        if self.tickers is not None:
            m &= frame["ticker"].isin(self.tickers).to_numpy()
        days = _days(frame["date"])
        if self.start is not None:
            m &= days >= _days([np.datetime64(self.start, "D")])[0]
        if self.end is not None:
            m &= days <= _days([np.datetime64(self.end, "D")])[0]
        return m


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


def _empty_manifest() -> dict[str, Any]:
    return {
        "format": STORE_FORMAT,
        "generation": 0,
        "updated_at": None,
        "columns": {},
        "files": {},
        "last_dates": {},
        "market": None,
    }


class FeatureStore:
    """One feature-set version's offline store under ``root``: a local folder (``self.root`` is
    its ``Path``) or an ``s3://bucket/prefix`` URL (``self.root`` is that string), see
    ``features.storage``. On S3 the part files are immutable objects with unique names, the
    manifest is replaced by a conditional PUT (If-Match its ETag as read under the lock), and the
    lock is a lease object; everything is read into memory, nothing lands on local disk."""

    def __init__(self, root: Path | str, *, feature_columns: list[str] | None = None,
                 label_columns: list[str] | None = None, cs_normalization: str = "none"):
        if cs_normalization not in CS_NORMALIZATIONS:
            raise ValueError(f"cs_normalization must be one of {CS_NORMALIZATIONS}, got {cs_normalization!r}")
        self.location = storage.location(root)
        self.remote = self.location.remote
        self.root: Any = self.location.url if self.remote else Path(root)
        self._columns = {"features": feature_columns, "labels": label_columns}
        self.cs_normalization = cs_normalization

    @classmethod
    def at(cls, base: Path | str, feature_set: str, version: str, **kwargs: Any) -> FeatureStore:
        return cls(storage.join(base, feature_set, version), **kwargs)

    # --- manifest ----------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        if self.remote:
            return self._manifest_and_token()[0]
        path = self.root / MANIFEST
        try:
            with open(path, "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return _empty_manifest()

    def _manifest_and_token(self) -> tuple[dict[str, Any], str | None]:
        """The manifest and the token its conditional replacement needs (None locally)."""
        if not self.remote:
            return self.manifest(), None
        data, token = self.location.read_pointer(MANIFEST)
        return (json.loads(data) if data is not None else _empty_manifest()), token

    # --- files (a local folder or an object store) ----------------------------------------
    def _write(self, rel: str, data: Any) -> None:
        """A new part file; locally fsynced at commit, on S3 one atomic PUT."""
        if self.remote:
            self.location.write_bytes(rel, data)
        else:
            atomic_write_bytes(self.root / rel, data, fsync=False)

    def _remove(self, rel: str) -> None:
        with contextlib.suppress(OSError):
            if self.remote:
                self.location.remove(rel)
            else:
                (self.root / rel).unlink()

    def _tables(self, rels: list[str], *, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        """The rows of ``rels`` (one dataset); on S3 the objects are fetched concurrently into memory."""
        if not self.remote:
            return ds.dataset([str(self.root / rel) for rel in rels], format="parquet").to_table(
                columns=columns, filter=filter)
        blobs = self.location.read_many(rels)
        tables = [pq.read_table(pa.BufferReader(blobs[rel]), columns=columns, filters=filter) for rel in rels]
        return pa.concat_tables(tables, promote_options="default")

    def _read_table(self, rel: str) -> pa.Table:
        if self.remote:
            return pq.read_table(pa.BufferReader(self.location.read_bytes(rel)))
        return pq.read_table(self.root / rel)

    def columns(self, dataset: str, manifest: dict[str, Any] | None = None) -> list[str]:
        if self._columns.get(dataset):
            return list(self._columns[dataset])
        m = manifest or self.manifest()
        return list(m["columns"].get(dataset, []))

    def last_dates(self, manifest: dict[str, Any] | None = None) -> dict[str, date]:
        m = manifest or self.manifest()
        return {t: date.fromisoformat(d) for t, d in m["last_dates"].items()}

    def entries(self, dataset: str, *, start: Any = None, end: Any = None, tickers: Iterable[str] | None = None,
                manifest: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Live files of ``dataset`` that may hold rows in [start, end] for ``tickers``."""
        m = manifest or self.manifest()
        scope = ReplaceScope(frozenset(tickers) if tickers is not None else None, _to_date(start), _to_date(end))
        return {rel: e for rel, e in m["files"].items() if e["dataset"] == dataset and scope.touches(e)}

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        if self.remote:
            with self.location.lock(".lock"):
                yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # --- reads -------------------------------------------------------------------------------
    def read(self, dataset: str, *, columns: list[str] | None = None, start: Any = None, end: Any = None,
             tickers: Iterable[str] | None = None, manifest: dict[str, Any] | None = None) -> pd.DataFrame:
        """Rows of ``dataset`` ("features" or "labels") in [start, end] for ``tickers`` (None = all),
        sorted by (ticker, date); ``date`` is datetime64[ns], ``ticker`` str."""
        tickers = sorted({str(t) for t in tickers}) if tickers is not None else None
        start_d, end_d = _to_date(start), _to_date(end)
        for attempt in range(3):
            m = manifest or self.manifest()
            stored = self.columns(dataset, m)
            cols = [*KEY_COLUMNS, *(stored if columns is None else [c for c in columns if c not in KEY_COLUMNS])]
            entries = self.entries(dataset, start=start_d, end=end_d, tickers=tickers, manifest=m)
            if not entries:
                dtype = STORE_DTYPE if dataset == "features" else np.float64
                return _empty_frame(cols, {c: dtype for c in cols})
            filt = None
            if start_d is not None:
                filt = ds.field("date") >= pa.scalar(start_d, pa.date32())
            if end_d is not None:
                f = ds.field("date") <= pa.scalar(end_d, pa.date32())
                filt = f if filt is None else filt & f
            if tickers is not None:
                f = ds.field("ticker").isin(tickers)
                filt = f if filt is None else filt & f
            try:
                table = self._tables(sorted(entries), columns=cols, filter=filt)
            except OSError:  # a concurrent commit replaced a file: read the new manifest
                if manifest is not None or attempt == 2:
                    raise
                continue
            break
        table = table.sort_by([("ticker", "ascending"), ("date", "ascending")])
        frame = _table_to_frame(table)
        if dataset == "features" and self.cs_normalization != "none" and len(frame):
            names = [c for c in frame.columns if c not in KEY_COLUMNS]
            frame = cs_apply(frame, names, self.xsection(start=frame["date"].min(), end=frame["date"].max(),
                                                         manifest=m))
        return frame

    def xsection(self, *, start: Any = None, end: Any = None, manifest: dict[str, Any] | None = None) -> pd.DataFrame:
        """The stored per-date cross-section statistics in [start, end] (``features.normalize``)."""
        m = manifest or self.manifest()
        scope = ReplaceScope(None, _to_date(start), _to_date(end))
        rels = sorted(rel for rel, e in m["files"].items() if e["dataset"] == XSECTION and scope.touches(e))
        if not rels:
            return pd.DataFrame({"date": np.array([], dtype="datetime64[ns]")})
        frame = self.read_files(rels)
        return frame.sort_values("date", kind="stable").reset_index(drop=True)

    def read_files(self, rels: Iterable[str]) -> pd.DataFrame:
        tables = [self._read_table(rel) for rel in rels]
        if not tables:
            return pd.DataFrame()
        return _table_to_frame(pa.concat_tables(tables))

    def latest_rows(self, *, tickers: Iterable[str] | None = None,
                    manifest: dict[str, Any] | None = None) -> pd.DataFrame:
        """The latest stored feature row of each ticker (all tickers when None)."""
        m = manifest or self.manifest()
        last = self.last_dates(m)
        wanted = sorted(last) if tickers is None else sorted(t for t in set(tickers) if t in last)
        cols = [*KEY_COLUMNS, *self.columns("features", m)]
        if not wanted:
            return _empty_frame(cols, {c: STORE_DTYPE for c in cols})
        by_month: dict[tuple[int, int], list[str]] = {}
        for t in wanted:
            by_month.setdefault((last[t].year, last[t].month), []).append(t)
        parts = []
        for (y, mo), group in sorted(by_month.items()):
            lo = date(y, mo, 1)
            hi = (pd.Timestamp(lo) + pd.offsets.MonthEnd(0)).date()
            parts.append(self.read("features", start=lo, end=hi, tickers=group, manifest=m))
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        want_day = frame["ticker"].map({t: pd.Timestamp(last[t]) for t in wanted})
        frame = frame.loc[frame["date"].to_numpy() == want_day.to_numpy()]
        return frame.sort_values("ticker", kind="stable").reset_index(drop=True)

    def market(self, manifest: dict[str, Any] | None = None) -> pd.Series | None:
        """The stored market return series (index: dates), or None."""
        m = manifest or self.manifest()
        for attempt in (1, 2):
            rel = m.get("market")
            if not rel:
                return None
            try:
                frame = _table_to_frame(self._read_table(rel))
                break
            except FileNotFoundError:
                # A writer that committed after ``m`` was read replaced the series and removed this
                # file (parallel feature chunks): its manifest names the current one.
                if attempt == 2:
                    raise
                m = self.manifest()
        return pd.Series(frame["ret"].to_numpy(), index=pd.DatetimeIndex(frame["date"]), name="ret")

    def verify(self) -> list[str]:
        """Problems found re-hashing every live file ([] when all files match the manifest)."""
        problems = []
        m = self.manifest()
        if self.remote:
            rels = sorted(m["files"])
            for i in range(0, len(rels), storage.READ_BATCH):
                for rel in rels[i:i + storage.READ_BATCH]:
                    try:
                        data = self.location.read_bytes(rel)
                    except FileNotFoundError:
                        problems.append(f"{rel}: missing")
                        continue
                    if hashlib.sha256(data).hexdigest() != m["files"][rel]["sha256"]:
                        problems.append(f"{rel}: checksum mismatch")
            return problems
        for rel, e in sorted(m["files"].items()):
            path = self.root / rel
            if not path.is_file():
                problems.append(f"{rel}: missing")
            elif sha256_file(path) != e["sha256"]:
                problems.append(f"{rel}: checksum mismatch")
        return problems

    def vacuum(self, *, min_age_s: float = 86_400.0) -> int:
        """Delete files no manifest names (left by failed writers) older than ``min_age_s``."""
        if self.remote:
            live = set(self.manifest()["files"])
            removed = 0
            for info in self.location.files():
                name = info.relpath.rsplit("/", 1)[-1]
                if (name in (MANIFEST, ".lock") or info.relpath in live or time.time() - info.mtime < min_age_s
                        or not name.endswith((".parquet", ".tmp"))):
                    continue
                self._remove(info.relpath)
                removed += 1
            return removed
        if not self.root.is_dir():
            return 0
        live = set(self.manifest()["files"])
        now = time.time()
        removed = 0
        for path in self.root.rglob("*"):
            if not path.is_file() or path.name in (MANIFEST, ".lock"):
                continue
            rel = path.relative_to(self.root).as_posix()
            if rel in live or now - path.stat().st_mtime < min_age_s:
                continue
            if path.suffix in (".parquet", ".tmp"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # --- writes ------------------------------------------------------------------------------
    def writer(self, *, replace: ReplaceScope | None = None, tag: str = "") -> StoreWriter:
        return StoreWriter(self, replace=replace, tag=tag)


@dataclass
class CommitResult:
    generation: int
    files_written: list[tuple[str, str]]  # (relative path, sha256)
    files_removed: list[str]
    rows: int  # feature rows written
    label_rows: int
    tickers: int  # tickers with feature rows written
    min_date: date | None
    max_date: date | None
    checksum: str
    bytes_written: int


class StoreWriter:
    """Collects one build's rows and commits them atomically.

    ``write_parts`` streams rows to new part files at once (a full build, or tickers the store has
    never held): the caller guarantees their keys are not in the store after ``replace`` applies.
    ``upsert`` buffers rows and merges them into their month partition at commit, replacing rows
    with the same (ticker, date): an incremental build.
    """

    def __init__(self, store: FeatureStore, *, replace: ReplaceScope | None, tag: str):
        self.store = store
        self.replace = replace
        self.tag = tag
        self._parts: dict[str, dict[str, Any]] = {}
        self._upserts: dict[str, dict[int, list[pd.DataFrame]]] = {d: {} for d in DATASETS}
        self._market: pd.DataFrame | None = None
        self._new_last: dict[str, int] = {}
        self._tickers: set[str] = set()
        self._min_day: int | None = None
        self._max_day: int | None = None
        self.rows = 0
        self.label_rows = 0
        self._closed = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()

    # --- collecting --------------------------------------------------------------------------
    def _columns(self, dataset: str, frame: pd.DataFrame) -> list[str]:
        cols = self.store._columns.get(dataset)
        if cols:
            return list(cols)
        return [c for c in frame.columns if c not in KEY_COLUMNS]

    def _note_features(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        days = _days(frame["date"])
        ticker = frame["ticker"].astype(str).to_numpy()
        last = pd.Series(days).groupby(ticker, sort=False).max()
        for t, d in last.items():
            if d > self._new_last.get(t, -(1 << 40)):
                self._new_last[t] = int(d)
        self._tickers.update(last.index)
        lo, hi = int(days.min()), int(days.max())
        self._min_day = lo if self._min_day is None else min(self._min_day, lo)
        self._max_day = hi if self._max_day is None else max(self._max_day, hi)
        self.rows += len(frame)

    def _write_slice(self, dataset: str, sl: _Slice,
                     pending: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        y, mo = sl.month // 12 + 1970, sl.month % 12 + 1
        rel = f"{dataset}/year={y:04d}/month={mo:02d}/part-{uuid.uuid4().hex[:16]}.parquet"
        data, sha = _encode_table(sl.table)
        if pending is None:
            self.store._write(rel, data)  # locally fsynced at commit
        else:
            pending[rel] = data  # on S3 the frame's parts are uploaded together, concurrently
        entry = {
            "dataset": dataset, "year": y, "month": mo, "rows": sl.table.num_rows, "bytes": data.size,
            "sha256": sha, "min_ticker": sl.min_ticker, "max_ticker": sl.max_ticker,
            "min_date": _day_to_date(sl.min_day).isoformat(), "max_date": _day_to_date(sl.max_day).isoformat(),
            "tag": self.tag,
        }
        return rel, entry

    def _write_frame(self, dataset: str, frame: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, Any]]:
        dtype = STORE_DTYPE if dataset == "features" else np.float64
        written = {}
        pending: dict[str, Any] | None = {} if self.store.remote else None
        for sl in _month_slices(frame, columns, dtype):
            rel, entry = self._write_slice(dataset, sl, pending)
            written[rel] = entry
        if pending:
            self.store.location.write_many(pending)
        return written

    def write_parts(self, *, features: pd.DataFrame, labels: pd.DataFrame | None = None) -> None:
        for dataset, frame in (("features", features), ("labels", labels)):
            if frame is None or frame.empty:
                continue
            self._parts.update(self._write_frame(dataset, frame, self._columns(dataset, frame)))
            if dataset == "labels":
                self.label_rows += len(frame)
        self._note_features(features)

    def upsert(self, *, features: pd.DataFrame, labels: pd.DataFrame | None = None) -> None:
        for dataset, frame in (("features", features), ("labels", labels)):
            if frame is None or frame.empty:
                continue
            months = _days(frame["date"]).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
            for mk in np.unique(months):
                self._upserts[dataset].setdefault(int(mk), []).append(frame.loc[months == mk])
            if dataset == "labels":
                self.label_rows += len(frame)
        self._note_features(features)

    def set_market(self, returns: pd.Series, source: pd.Series | None = None) -> None:
        """The market series the build used (stored beside the features, replaced each commit)."""
        idx = pd.DatetimeIndex(returns.index)
        self._market = pd.DataFrame(
            {
                "date": idx.values.astype("datetime64[D]"),
                "ret": returns.to_numpy(dtype=np.float64),
                "source": (source.reindex(returns.index).fillna("").astype(str).to_numpy()
                           if source is not None else np.full(len(idx), "", dtype=object)),
            }
        ).sort_values("date", kind="stable")

    # --- commit ------------------------------------------------------------------------------
    def _rewrite(self, dataset: str, frame: pd.DataFrame, columns: list[str],
                 created: dict[str, dict[str, Any]]) -> None:
        created.update(self._write_frame(dataset, frame, columns))

    def commit(self) -> CommitResult:
        if self._closed:
            raise RuntimeError("writer already committed or aborted")
        store = self.store
        created: dict[str, dict[str, Any]] = {}
        removed: list[str] = []
        published = False
        try:
            with store._lock():
                m, token = store._manifest_and_token()
                columns = {}
                for dataset in DATASETS:
                    stored = m["columns"].get(dataset)
                    mine = store._columns.get(dataset)
                    if mine is None:
                        mine = self._infer_columns(dataset) or stored
                    if stored and mine and list(stored) != list(mine):
                        raise ValueError(f"{dataset} columns differ from the store's: {mine} vs {stored}")
                    columns[dataset] = list(mine or stored or [])
                live = dict(m["files"])
                upsert_months = {(d, mk) for d in DATASETS for mk in self._upserts[d]}

                # 1. full builds: drop or rewrite existing rows in the replaced scope
                if self.replace is not None:
                    for rel, e in sorted(live.items()):
                        if e["dataset"] not in DATASETS or not self.replace.touches(e):
                            continue
                        if (e["dataset"], (e["year"] - 1970) * 12 + e["month"] - 1) in upsert_months:
                            continue  # merged below
                        if self.replace.covers(e):
                            live.pop(rel)
                            removed.append(rel)
                            continue
                        frame = store.read_files([rel])
                        drop = self.replace.mask(frame)
                        if not drop.any():
                            continue
                        live.pop(rel)
                        removed.append(rel)
                        if not drop.all():
                            self._rewrite(e["dataset"], frame.loc[~drop], columns[e["dataset"]], created)

                # 2. incremental builds: merge new rows into their month partition
                for dataset, mk in sorted(upsert_months):
                    y, mo = mk // 12 + 1970, mk % 12 + 1
                    olds = sorted(rel for rel, e in live.items()
                                  if e["dataset"] == dataset and e["year"] == y and e["month"] == mo)
                    new = pd.concat(self._upserts[dataset][mk], ignore_index=True)
                    new = new[[*KEY_COLUMNS, *columns[dataset]]].copy()
                    new["ticker"] = new["ticker"].astype(str)
                    new["date"] = new["date"].astype("datetime64[ns]")
                    new = new.drop_duplicates(KEY_COLUMNS, keep="last")
                    old = store.read_files(olds) if olds else None
                    if old is not None and len(old):
                        keep = np.ones(len(old), dtype=bool)
                        if self.replace is not None:
                            keep &= ~self.replace.mask(old)
                        old_keys = pd.MultiIndex.from_arrays([old["ticker"], _days(old["date"])])
                        new_keys = pd.MultiIndex.from_arrays([new["ticker"], _days(new["date"])])
                        keep &= ~old_keys.isin(new_keys)
                        old = old.loc[keep, [*KEY_COLUMNS, *columns[dataset]]]
                        merged = pd.concat([old, new], ignore_index=True)
                    else:
                        merged = new
                    merged = _sort_keys(merged)
                    for rel in olds:
                        live.pop(rel)
                        removed.append(rel)
                    self._rewrite(dataset, merged, columns[dataset], created)

                # 3. the market series
                market_rel = m.get("market")
                if self._market is not None:
                    table = pa.Table.from_pandas(self._market, preserve_index=False)
                    data, sha = _encode_table_plain(table)
                    market_rel = f"market/market-{uuid.uuid4().hex[:16]}.parquet"
                    store._write(market_rel, data)
                    created[market_rel] = {
                        "dataset": "market", "rows": table.num_rows, "bytes": data.size, "sha256": sha,
                        "min_date": str(self._market["date"].min()) if len(self._market) else None,
                        "max_date": str(self._market["date"].max()) if len(self._market) else None,
                        "tag": self.tag,
                    }
                    if m.get("market"):
                        live.pop(m["market"], None)
                        removed.append(m["market"])

                # 3b. per-date statistics of every month whose features changed
                if store.cs_normalization != "none":
                    self._restate_xsection(live, created, removed, columns["features"], before=m["files"])

                all_new = {**self._parts, **created}
                # 4. durability before visibility (an S3 PUT is durable when it returns)
                dirs = set()
                for rel in all_new if not store.remote else ():
                    _fsync_path(store.root / rel)
                    p = (store.root / rel).parent
                    while p != store.root and p not in dirs:
                        dirs.add(p)
                        p = p.parent
                for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                    _fsync_path(d)

                # 5. last date per ticker
                last = dict(m["last_dates"])
                rescan = []
                if self.replace is not None:
                    for t, d in list(last.items()):
                        if self.replace.covers_row(t, date.fromisoformat(d)):
                            last.pop(t)
                            if self.replace.start is not None:
                                rescan.append(t)
                for t, d in self._new_last.items():
                    iso = _day_to_date(d).isoformat()
                    if t not in last or iso > last[t]:
                        last[t] = iso
                final_files = {**live, **all_new}
                rescan = [t for t in rescan if t not in self._new_last]
                if rescan:
                    last.update(_scan_last_dates(store, final_files, rescan))

                manifest = {
                    "format": STORE_FORMAT,
                    "generation": int(m.get("generation", 0)) + 1,
                    "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "columns": {**m["columns"], **{d: c for d, c in columns.items() if c}},
                    "files": dict(sorted(final_files.items())),
                    "last_dates": dict(sorted(last.items())),
                    "market": market_rel,
                }
                payload = json.dumps(manifest, indent=0, allow_nan=False).encode()
                if store.remote:  # only if no other writer committed since we read it
                    store.location.write_pointer(MANIFEST, payload, token=token)
                else:
                    atomic_write_bytes(store.root / MANIFEST, payload, fsync=True)
                published = True
                self._closed = True
                for rel in removed:
                    store._remove(rel)
        except BaseException:
            if not published:
                for rel in created:
                    store._remove(rel)
            raise
        files = [(rel, e["sha256"]) for rel, e in all_new.items()]
        return CommitResult(
            generation=manifest["generation"],
            files_written=sorted(files),
            files_removed=sorted(removed),
            rows=self.rows,
            label_rows=self.label_rows,
            tickers=len(self._tickers),
            min_date=_day_to_date(self._min_day) if self._min_day is not None else None,
            max_date=_day_to_date(self._max_day) if self._max_day is not None else None,
            checksum=files_checksum(files),
            bytes_written=sum(int(e.get("bytes", 0)) for e in all_new.values()),
        )

    def _restate_xsection(self, live: dict[str, dict[str, Any]], created: dict[str, dict[str, Any]],
                          removed: list[str], columns: list[str], before: dict[str, dict[str, Any]]) -> None:
        """Recompute the cross-section statistics of each month whose feature files changed, from
        the month's files as this commit leaves them (all stocks, raw values)."""
        store = self.store
        final = {**live, **self._parts, **created}
        changed = {(e["year"], e["month"]) for rel, e in {**self._parts, **created}.items()
                   if e["dataset"] == "features"}
        gone = set(removed)
        changed |= {(e["year"], e["month"]) for rel, e in before.items() if rel in gone and e["dataset"] == "features"}
        for y, mo in sorted(changed):
            for rel in [r for r, e in live.items() if e["dataset"] == XSECTION and (e["year"], e["month"]) == (y, mo)]:
                live.pop(rel)
                removed.append(rel)
            rels = sorted(r for r, e in final.items() if e["dataset"] == "features" and (e["year"], e["month"]) == (y, mo))
            if not rels:
                continue
            stats = cs_stats(store.read_files(rels), columns)
            table = pa.Table.from_pandas(stats.assign(date=stats["date"].to_numpy().astype("datetime64[D]")),
                                         preserve_index=False)
            data, sha = _encode_table_plain(table)
            rel = f"{XSECTION}/year={y:04d}/month={mo:02d}/part-{uuid.uuid4().hex[:16]}.parquet"
            store._write(rel, data)
            created[rel] = {
                "dataset": XSECTION, "year": y, "month": mo, "rows": table.num_rows, "bytes": data.size,
                "sha256": sha, "min_date": str(stats["date"].min().date()), "max_date": str(stats["date"].max().date()),
                "tag": self.tag,
            }

    def _infer_columns(self, dataset: str) -> list[str] | None:
        for frames in self._upserts[dataset].values():
            if frames:
                return [c for c in frames[0].columns if c not in KEY_COLUMNS]
        for rel, e in self._parts.items():
            if e["dataset"] == dataset:
                names = (pq.read_schema(pa.BufferReader(self.store.location.read_bytes(rel))) if self.store.remote
                         else pq.read_schema(self.store.root / rel)).names
                return [c for c in names if c not in KEY_COLUMNS]
        return None

    def abort(self) -> None:
        """Delete the part files this writer streamed (nothing else was made visible)."""
        if self._closed:
            return
        for rel in self._parts:
            self.store._remove(rel)
        self._parts.clear()
        self._closed = True


def _encode_table_plain(table: pa.Table) -> tuple[pa.Buffer, str]:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression=COMPRESSION)
    data = buf.getvalue()
    return data, hashlib.sha256(memoryview(data)).hexdigest()


def _sort_keys(frame: pd.DataFrame) -> pd.DataFrame:
    codes, _ = pd.factorize(frame["ticker"].astype(str), sort=True)
    order = np.lexsort((_days(frame["date"]), codes))
    return frame.iloc[order].reset_index(drop=True)


def _scan_last_dates(store: FeatureStore, files: dict[str, dict[str, Any]], tickers: list[str]) -> dict[str, str]:
    """Last stored date of ``tickers`` by reading (ticker, date) of feature files, newest month first."""
    want = set(tickers)
    found: dict[str, str] = {}
    months = sorted({(e["year"], e["month"]) for e in files.values() if e["dataset"] == "features"}, reverse=True)
    for y, mo in months:
        rels = [rel for rel, e in files.items() if e["dataset"] == "features" and (e["year"], e["month"]) == (y, mo)
                and any(e["min_ticker"] <= t <= e["max_ticker"] for t in want)]
        if not rels:
            continue
        table = store._tables(rels, columns=KEY_COLUMNS, filter=ds.field("ticker").isin(sorted(want)))
        if table.num_rows:
            frame = _table_to_frame(table)
            for t, d in frame.groupby("ticker")["date"].max().items():
                found[t] = d.date().isoformat()
            want -= set(found)
        if not want:
            break
    return found


# --------------------------------------------------------------------------------------------
# The build pipeline: chunks of bars -> features and labels -> the store
# --------------------------------------------------------------------------------------------


def equal_weighted_returns(ticker: Any, dates: Any, adj_close: Any, *, max_gap_days: int | None = None) -> pd.Series:
    """Equal-weighted daily market return of the given bars: the mean over tickers of the simple
    return from each ticker's previous bar (the engine's definition; 0.0 on a day nobody has one).

    ``max_gap_days``: ignore a return whose previous bar is more than that many calendar days
    older, so the value of a day never depends on how far back the bars were loaded.
    Rows are taken in (ticker, date) order, so the same bars give bit-identical means.
    """
    codes, _ = pd.factorize(pd.Series(ticker).astype(str), sort=True)
    d8 = np.asarray(pd.to_datetime(dates)).astype("datetime64[ns]").astype(np.int64)
    ac = np.asarray(adj_close, dtype=np.float64)
    ok = np.isfinite(ac) & (ac > 0)
    codes, d8, ac = codes[ok], d8[ok], ac[ok]
    order = np.lexsort((d8, codes))
    codes, d8, ac = codes[order], d8[order], ac[order]
    r = np.full(len(ac), np.nan)
    if len(ac) > 1:
        r[1:] = ac[1:] / ac[:-1] - 1.0
        r[1:][codes[1:] != codes[:-1]] = np.nan
        if max_gap_days is not None:
            r[1:][(d8[1:] - d8[:-1]) > int(max_gap_days) * 86_400 * 10**9] = np.nan
    date_codes, uniq = pd.factorize(d8, sort=True)
    fin = np.isfinite(r)
    sums = np.bincount(date_codes[fin], weights=r[fin], minlength=len(uniq))
    cnt = np.bincount(date_codes[fin], minlength=len(uniq))
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(cnt > 0, sums / np.maximum(cnt, 1), 0.0)
    index = pd.DatetimeIndex(np.asarray(uniq, dtype=np.int64).view("datetime64[ns]"))
    return pd.Series(m, index=index, name="ret")


def combine_market(dates: Any, *, benchmark: pd.Series | None, fallback: pd.Series | None,
                   stored: pd.Series | None = None) -> tuple[pd.Series, pd.Series]:
    """Market returns on ``dates``: the ``stored`` series where it has the day, else the benchmark
    (SPY), else the ``fallback`` (equal-weighted). Returns (returns, source) indexed by date."""
    idx = pd.DatetimeIndex(pd.to_datetime(pd.Index(dates))).normalize().unique().sort_values()
    ret = pd.Series(np.nan, index=idx, name="ret")
    src = pd.Series("", index=idx, dtype=object)
    for name, series in (("equal_weighted", fallback), ("benchmark", benchmark), ("stored", stored)):
        if series is None or len(series) == 0:
            continue
        s = pd.Series(series.to_numpy(dtype=np.float64), index=pd.DatetimeIndex(series.index).normalize())
        s = s[~s.index.duplicated(keep="last")].dropna()
        hit = idx.isin(s.index)
        ret[hit] = s.reindex(idx[hit]).to_numpy()
        src[hit] = name
    if stored is not None and len(stored):
        # keep the stored days that are outside ``dates`` too: the series is the build's record
        s = pd.Series(stored.to_numpy(dtype=np.float64), index=pd.DatetimeIndex(stored.index).normalize())
        extra = s[~s.index.isin(idx)]
        if len(extra):
            ret = pd.concat([ret, extra]).sort_index()
            src = pd.concat([src, pd.Series("stored", index=extra.index, dtype=object)]).sort_index()
    ok = ret.notna()
    return ret[ok], src[ok]


@dataclass
class ChunkData:
    """One chunk of tickers to build.

    ``bars``: ticker,date,open,high,low,close,adj_close,volume (for an incremental ticker at least
    the ``MAX_LOOKBACK`` bars before its ``since`` date, plus every bar from it on).
    ``since``: ticker -> first date to (re)compute; a ticker not in it (or ``since=None``) is
    computed from all its bars. ``fundamentals``/``sentiment``/``social``: as ``compute_features``
    takes them.
    """

    bars: pd.DataFrame
    fundamentals: pd.DataFrame | None = None
    sentiment: pd.DataFrame | None = None
    since: dict[str, Any] | None = None
    social: pd.DataFrame | None = None


@dataclass
class ChunkResult:
    features: pd.DataFrame
    labels: pd.DataFrame
    new_tickers: set[str]  # tickers computed from all their bars in an incremental chunk
    talib_s: float
    engine_s: float


def compute_chunk(
    chunk: ChunkData,
    *,
    spec: FeatureSpec,
    market_returns: pd.Series | None,
    start: Any = None,
    end: Any = None,
    horizons: Iterable[int] = LABEL_HORIZONS,
    dtype: Any = STORE_DTYPE,
) -> ChunkResult:
    """Features and labels of one chunk, restricted to [start, end] and to the rows to (re)write."""
    horizons = tuple(int(h) for h in horizons)
    bars = chunk.bars
    t0 = time.perf_counter()
    talib_s = 0.0
    kwargs = {"market_returns": market_returns, "fundamentals": chunk.fundamentals,
              "sentiment": chunk.sentiment, "params": spec, "dtype": dtype, "social": chunk.social}
    tick = bars["ticker"].astype(str)
    since_of: dict[str, pd.Timestamp] = {}
    if chunk.since:
        since_of = {str(t): pd.Timestamp(s) for t, s in chunk.since.items() if s is not None}
    present = set(tick.unique())
    new_tickers = present - set(since_of) if chunk.since is not None else set()
    groups: dict[pd.Timestamp | None, list[str]] = {}
    for t in sorted(present):
        groups.setdefault(since_of.get(t), []).append(t)
    frames = []
    for since, members in groups.items():
        sub = bars if len(groups) == 1 else bars.loc[tick.isin(members).to_numpy()]
        tm: dict[str, float] = {}
        if since is None:
            f = compute_features(sub, timings=tm, **kwargs)
        else:
            f = compute_features_incremental(sub, since, timings=tm, **kwargs)
        talib_s += tm.get("talib", 0.0)
        frames.append(f)
    if not frames:
        features = compute_features(bars, **kwargs)
    elif len(frames) == 1:
        features = frames[0]
    else:
        features = _sort_keys(pd.concat(frames, ignore_index=True))
    engine_s = time.perf_counter() - t0

    labels = _labels_with_price(bars, horizons)
    if since_of:
        # rows whose label can change: from the max(h)-th bar before ``since`` on
        lt = labels["ticker"].astype(str)
        since_row = lt.map(since_of)
        is_old = (labels["date"] < since_row).to_numpy()  # NaT compares False: new tickers keep all
        pos = labels.groupby(lt, sort=False).cumcount().to_numpy()
        by_ticker = pd.Series(is_old).groupby(lt.to_numpy(), sort=False)
        n_old = by_ticker.transform("sum").to_numpy()
        n_all = by_ticker.transform("size").to_numpy()
        # a ticker without a new bar changes nothing; else rewrite from the max(h)-th bar before since
        keep = (pos >= n_old - max(horizons)) & (n_all > n_old)
        labels = labels.loc[keep].reset_index(drop=True)
    features = _in_range(features, start, end)
    labels = _in_range(labels, start, end)
    return ChunkResult(features=features, labels=labels, new_tickers=new_tickers, talib_s=talib_s,
                       engine_s=engine_s)


def _labels_with_price(bars: pd.DataFrame, horizons: tuple[int, ...]) -> pd.DataFrame:
    """compute_labels plus the adj_close of each row, columns in ``label_store_columns`` order."""
    lab = compute_labels(bars, horizons)
    ac = bars["adj_close"].to_numpy(dtype=np.float64, na_value=np.nan)
    ok = np.isfinite(ac) & (ac > 0)
    codes, _ = pd.factorize(bars["ticker"].astype(str), sort=True)
    d8 = _days(bars["date"])
    codes, d8, ac = codes[ok], d8[ok], ac[ok]
    order = np.lexsort((d8, codes))
    if len(order) != len(lab) or not np.array_equal(d8[order], _days(lab["date"])):
        raise AssertionError("labels and bars are not aligned")
    out = {"ticker": lab["ticker"].astype(str).to_numpy(), "date": lab["date"].to_numpy(),
           "adj_close": ac[order]}
    for h in horizons:
        out[f"fwd_ret_{h}"] = lab[f"fwd_ret_{h}"].to_numpy()
        out[f"fwd_dir_{h}"] = lab[f"fwd_dir_{h}"].to_numpy()
    return pd.DataFrame(out)


def _in_range(frame: pd.DataFrame, start: Any, end: Any) -> pd.DataFrame:
    if start is None and end is None:
        return frame
    d = frame["date"].to_numpy()
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= d >= np.datetime64(_to_date(start), "ns")
    if end is not None:
        keep &= d <= np.datetime64(_to_date(end), "ns")
    return frame if keep.all() else frame.loc[keep].reset_index(drop=True)


@dataclass
class MaterializeResult:
    commit: CommitResult
    chunks: int
    bars: int
    seconds: float
    engine_s: float
    talib_s: float
    write_s: float
    commit_s: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.commit.rows


def materialize(
    *,
    store: FeatureStore,
    chunks: Iterable[ChunkData],
    spec: FeatureSpec,
    market_returns: pd.Series,
    market_source: pd.Series | None = None,
    incremental: bool,
    replace: ReplaceScope | None = None,
    start: Any = None,
    end: Any = None,
    tag: str = "",
    total_chunks: int | None = None,
    progress: Progress | None = None,
) -> MaterializeResult:
    """Compute every chunk and commit the result to ``store`` in one atomic commit.

    Full build (``incremental=False``): rows stream to new part files and ``replace`` says which
    stored rows they supersede. Incremental: rows of tickers the store already holds are merged
    into their month partitions; tickers it has never held stream to new part files.
    """
    started = time.perf_counter()
    engine_s = talib_s = write_s = 0.0
    n_bars = n_chunks = 0
    say = progress or (lambda _msg: None)
    with store.writer(replace=replace, tag=tag) as writer:
        for chunk in chunks:
            t0 = time.perf_counter()
            res = compute_chunk(chunk, spec=spec, market_returns=market_returns, start=start, end=end)
            t1 = time.perf_counter()
            if not incremental:
                writer.write_parts(features=res.features, labels=res.labels)
            elif res.new_tickers:
                fresh_f = res.features["ticker"].astype(str).isin(res.new_tickers).to_numpy()
                fresh_l = res.labels["ticker"].astype(str).isin(res.new_tickers).to_numpy()
                writer.write_parts(features=res.features.loc[fresh_f], labels=res.labels.loc[fresh_l])
                writer.upsert(features=res.features.loc[~fresh_f], labels=res.labels.loc[~fresh_l])
            else:
                writer.upsert(features=res.features, labels=res.labels)
            t2 = time.perf_counter()
            n_chunks += 1
            n_bars += len(chunk.bars)
            engine_s += res.engine_s
            talib_s += res.talib_s
            write_s += t2 - t1
            secs = t2 - t0
            of = f"/{total_chunks}" if total_chunks else ""
            say(f"chunk {n_chunks}{of}: {chunk.bars['ticker'].nunique():,} tickers, {len(chunk.bars):,} bars -> "
                f"{len(res.features):,} rows in {secs:.1f}s ({len(res.features) / max(secs, 1e-9):,.0f} rows/s)")
        t3 = time.perf_counter()
        if incremental and writer.rows == 0 and writer.label_rows == 0:
            writer.abort()  # nothing new: write nothing, not even the market series
            commit = CommitResult(generation=store.manifest()["generation"], files_written=[], files_removed=[],
                                  rows=0, label_rows=0, tickers=0, min_date=None, max_date=None, checksum="",
                                  bytes_written=0)
        else:
            writer.set_market(market_returns, market_source)
            commit = writer.commit()
        commit_s = time.perf_counter() - t3
    return MaterializeResult(
        commit=commit, chunks=n_chunks, bars=n_bars, seconds=time.perf_counter() - started,
        engine_s=engine_s, talib_s=talib_s, write_s=write_s, commit_s=commit_s,
    )
