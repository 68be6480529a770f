"""Writes to the offline feature store: one build's rows, committed atomically. Framework-free (no Django).

``FeatureStore.writer`` opens a ``StoreWriter``; ``commit`` publishes everything it collected in
one new manifest, under the store's lock, as the ``features.store`` docstring describes (new files
durable before the manifest names them, superseded files deleted only after it does; the month
statistics of a cross-section-normalized version restated in the same commit).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features import storage
from features.normalize import cs_stats
from features.store_format import (
    DATASETS,
    KEY_COLUMNS,
    MANIFEST,
    STORE_DTYPE,
    STORE_FORMAT,
    XSECTION,
    MonthSlice,
    ReplaceScope,
    atomic_write_bytes,
    day_numbers,
    day_to_date,
    encode_table,
    encode_table_plain,
    files_checksum,
    month_slices,
    sort_keys,
    table_to_frame,
)

if TYPE_CHECKING:  # features.store imports this module to open writers
    from features.store import FeatureStore

__all__ = ["CommitResult", "StoreWriter"]


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
        days = day_numbers(frame["date"])
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

    def _write_slice(self, dataset: str, sl: MonthSlice,
                     pending: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        y, mo = sl.month // 12 + 1970, sl.month % 12 + 1
        rel = f"{dataset}/year={y:04d}/month={mo:02d}/part-{uuid.uuid4().hex[:16]}.parquet"
        data, sha = encode_table(sl.table)
        if pending is None:
            self.store._write(rel, data)  # locally fsynced at commit
        else:
            pending[rel] = data  # on S3 the frame's parts are uploaded together, concurrently
        entry = {
            "dataset": dataset, "year": y, "month": mo, "rows": sl.table.num_rows, "bytes": data.size,
            "sha256": sha, "min_ticker": sl.min_ticker, "max_ticker": sl.max_ticker,
            "min_date": day_to_date(sl.min_day).isoformat(), "max_date": day_to_date(sl.max_day).isoformat(),
            "tag": self.tag,
        }
        return rel, entry

    def _write_frame(self, dataset: str, frame: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, Any]]:
        dtype = STORE_DTYPE if dataset == "features" else np.float64
        written = {}
        pending: dict[str, Any] | None = {} if self.store.remote else None
        for sl in month_slices(frame, columns, dtype):
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
            months = day_numbers(frame["date"]).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
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
                        old_keys = pd.MultiIndex.from_arrays([old["ticker"], day_numbers(old["date"])])
                        new_keys = pd.MultiIndex.from_arrays([new["ticker"], day_numbers(new["date"])])
                        keep &= ~old_keys.isin(new_keys)
                        old = old.loc[keep, [*KEY_COLUMNS, *columns[dataset]]]
                        merged = pd.concat([old, new], ignore_index=True)
                    else:
                        merged = new
                    merged = sort_keys(merged)
                    for rel in olds:
                        live.pop(rel)
                        removed.append(rel)
                    self._rewrite(dataset, merged, columns[dataset], created)

                # 3. the market series
                market_rel = m.get("market")
                if self._market is not None:
                    table = pa.Table.from_pandas(self._market, preserve_index=False)
                    data, sha = encode_table_plain(table)
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
                    storage.fsync_path(store.root / rel)
                    p = (store.root / rel).parent
                    while p != store.root and p not in dirs:
                        dirs.add(p)
                        p = p.parent
                for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
                    storage.fsync_path(d)

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
                    iso = day_to_date(d).isoformat()
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
            min_date=day_to_date(self._min_day) if self._min_day is not None else None,
            max_date=day_to_date(self._max_day) if self._max_day is not None else None,
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
            data, sha = encode_table_plain(table)
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
            frame = table_to_frame(table)
            for t, d in frame.groupby("ticker")["date"].max().items():
                found[t] = d.date().isoformat()
            want -= set(found)
        if not want:
            break
    return found
