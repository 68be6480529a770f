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

Commits are made by ``features.store_writer.StoreWriter`` (``FeatureStore.writer``); the file format
both sides share is ``features.store_format``; the build pipeline that feeds the writer (chunks of
bars in, Parquet out) is ``features.build``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features import storage
from features.normalize import CS_NORMALIZATIONS, cs_apply
from features.store_format import (
    KEY_COLUMNS,
    MANIFEST,
    STORE_DTYPE,
    XSECTION,
    ReplaceScope,
    atomic_write_bytes,
    empty_frame,
    empty_manifest,
    sha256_file,
    table_to_frame,
    to_date,
)
from features.store_writer import StoreWriter

__all__ = ["FeatureStore"]

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
            return empty_manifest()

    def _manifest_and_token(self) -> tuple[dict[str, Any], str | None]:
        """The manifest and the token its conditional replacement needs (None locally)."""
        if not self.remote:
            return self.manifest(), None
        data, token = self.location.read_pointer(MANIFEST)
        return (json.loads(data) if data is not None else empty_manifest()), token

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
        scope = ReplaceScope(frozenset(tickers) if tickers is not None else None, to_date(start), to_date(end))
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
        start_d, end_d = to_date(start), to_date(end)
        for attempt in range(3):
            m = manifest or self.manifest()
            stored = self.columns(dataset, m)
            cols = [*KEY_COLUMNS, *(stored if columns is None else [c for c in columns if c not in KEY_COLUMNS])]
            entries = self.entries(dataset, start=start_d, end=end_d, tickers=tickers, manifest=m)
            if not entries:
                dtype = STORE_DTYPE if dataset == "features" else np.float64
                return empty_frame(cols, {c: dtype for c in cols})
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
        frame = table_to_frame(table)
        if dataset == "features" and self.cs_normalization != "none" and len(frame):
            names = [c for c in frame.columns if c not in KEY_COLUMNS]
            frame = cs_apply(frame, names, self.xsection(start=frame["date"].min(), end=frame["date"].max(),
                                                         manifest=m))
        return frame

    def xsection(self, *, start: Any = None, end: Any = None, manifest: dict[str, Any] | None = None) -> pd.DataFrame:
        """The stored per-date cross-section statistics in [start, end] (``features.normalize``)."""
        m = manifest or self.manifest()
        scope = ReplaceScope(None, to_date(start), to_date(end))
        rels = sorted(rel for rel, e in m["files"].items() if e["dataset"] == XSECTION and scope.touches(e))
        if not rels:
            return pd.DataFrame({"date": np.array([], dtype="datetime64[ns]")})
        frame = self.read_files(rels)
        return frame.sort_values("date", kind="stable").reset_index(drop=True)

    def read_files(self, rels: Iterable[str]) -> pd.DataFrame:
        tables = [self._read_table(rel) for rel in rels]
        if not tables:
            return pd.DataFrame()
        return table_to_frame(pa.concat_tables(tables))

    def latest_rows(self, *, tickers: Iterable[str] | None = None,
                    manifest: dict[str, Any] | None = None) -> pd.DataFrame:
        """The latest stored feature row of each ticker (all tickers when None)."""
        m = manifest or self.manifest()
        last = self.last_dates(m)
        wanted = sorted(last) if tickers is None else sorted(t for t in set(tickers) if t in last)
        cols = [*KEY_COLUMNS, *self.columns("features", m)]
        if not wanted:
            return empty_frame(cols, {c: STORE_DTYPE for c in cols})
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
                frame = table_to_frame(self._read_table(rel))
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

