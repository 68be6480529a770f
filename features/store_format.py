"""The offline feature store's file format, shared by its reader (``features.store``) and its
writer (``features.store_writer``). Framework-free (no Django).

Layout constants; dates as int64 day numbers; the Parquet encoding of (ticker, date)-sorted rows
split by calendar month, and its decoding back to frames; file checksums and atomic writes; the
``ReplaceScope`` (tickers x date range) tested against manifest entries and rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features import storage

__all__ = [
    "COMPRESSION",
    "DATASETS",
    "KEY_COLUMNS",
    "LABEL_HORIZONS",
    "MANIFEST",
    "STORE_DTYPE",
    "STORE_FORMAT",
    "XSECTION",
    "MonthSlice",
    "ReplaceScope",
    "atomic_write_bytes",
    "day_numbers",
    "day_to_date",
    "empty_frame",
    "empty_manifest",
    "encode_table",
    "encode_table_plain",
    "files_checksum",
    "label_store_columns",
    "month_slices",
    "sha256_file",
    "sort_keys",
    "table_to_frame",
    "to_date",
]

STORE_FORMAT = 1
STORE_DTYPE = np.float32
LABEL_HORIZONS: tuple[int, ...] = (1, 5)
MANIFEST = "_manifest.json"
COMPRESSION = "snappy"
DATASETS = ("features", "labels")
XSECTION = "xsection"
KEY_COLUMNS = ["ticker", "date"]


def label_store_columns(horizons: Iterable[int] = LABEL_HORIZONS) -> list[str]:
    """Columns of the labels dataset after ticker and date: adj_close, then per horizon ret, dir."""
    cols = ["adj_close"]
    for h in horizons:
        cols += [f"fwd_ret_{int(h)}", f"fwd_dir_{int(h)}"]
    return cols


# --------------------------------------------------------------------------------------------
# Files (atomic writes, checksums) and dates as day numbers
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


def atomic_write_bytes(path: Path, data: Any, *, fsync: bool = True) -> None:
    """Write ``data`` (bytes-like) to ``path`` through a temporary file in the same folder.

    The temporary file is fsynced (when ``fsync``) and renamed over ``path``; on any failure it is
    removed, so ``path`` is either absent, the old file, or the complete new one.
    """
    storage.atomic_write_local(path, data, fsync=fsync)


def to_date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return pd.Timestamp(value).date()


def day_numbers(values: Any) -> np.ndarray:
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


def day_to_date(day: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + int(day))


# --------------------------------------------------------------------------------------------
# Frames <-> Parquet
# --------------------------------------------------------------------------------------------


def encode_table(table: pa.Table) -> tuple[pa.Buffer, str]:
    """(Parquet bytes, sha256) of a features or labels part: tickers dictionary-encoded, key statistics."""
    buf = pa.BufferOutputStream()
    pq.write_table(
        table, buf, compression=COMPRESSION, use_dictionary=["ticker"], write_statistics=["ticker", "date"]
    )
    data = buf.getvalue()
    return data, hashlib.sha256(memoryview(data)).hexdigest()


@dataclass
class MonthSlice:
    month: int  # months since 1970-01
    table: pa.Table
    min_ticker: str
    max_ticker: str
    min_day: int
    max_day: int


def month_slices(frame: pd.DataFrame, columns: list[str], dtype: Any) -> list[MonthSlice]:
    """Split a (ticker, date)-sorted frame by calendar month into Arrow tables (rows stay sorted)."""
    n = len(frame)
    if n == 0:
        return []
    days = day_numbers(frame["date"])
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
            MonthSlice(
                month=int(months_s[a]),
                table=table,
                min_ticker=str(min(present)),
                max_ticker=str(max(present)),
                min_day=int(days_s[a:b].min()),
                max_day=int(days_s[a:b].max()),
            )
        )
    return out


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    if "date" in table.column_names:
        i = table.column_names.index("date")
        table = table.set_column(i, "date", pc.cast(table["date"], pa.timestamp("ns")))
    if "ticker" in table.column_names and pa.types.is_dictionary(table.schema.field("ticker").type):
        i = table.column_names.index("ticker")
        table = table.set_column(i, "ticker", pc.cast(table["ticker"], pa.string()))
    return table.to_pandas()


def empty_frame(columns: list[str], dtypes: dict[str, Any]) -> pd.DataFrame:
    data = {}
    for c in columns:
        if c == "ticker":
            data[c] = pd.Series(dtype=object)
        elif c == "date":
            data[c] = pd.Series(dtype="datetime64[ns]")
        else:
            data[c] = pd.Series(dtype=dtypes.get(c, np.float64))
    return pd.DataFrame(data)


def encode_table_plain(table: pa.Table) -> tuple[pa.Buffer, str]:
    """(Parquet bytes, sha256) of a table without the (ticker, date) keys: the market series, statistics."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression=COMPRESSION)
    data = buf.getvalue()
    return data, hashlib.sha256(memoryview(data)).hexdigest()


def sort_keys(frame: pd.DataFrame) -> pd.DataFrame:
    codes, _ = pd.factorize(frame["ticker"].astype(str), sort=True)
    order = np.lexsort((day_numbers(frame["date"]), codes))
    return frame.iloc[order].reset_index(drop=True)


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
        days = day_numbers(frame["date"])
        if self.start is not None:
            m &= days >= day_numbers([np.datetime64(self.start, "D")])[0]
        if self.end is not None:
            m &= days <= day_numbers([np.datetime64(self.end, "D")])[0]
        return m


def empty_manifest() -> dict[str, Any]:
    """The manifest of a version nothing has been committed to yet."""
    return {
        "format": STORE_FORMAT,
        "generation": 0,
        "updated_at": None,
        "columns": {},
        "files": {},
        "last_dates": {},
        "market": None,
    }
