"""Local file-drop provider: a folder where CSV, CSV.gz or Parquet price files are dropped daily.

Files are either long format (a ticker/symbol column, many tickers) or one file per ticker (the
ticker comes from the file name: ``AAPL.csv``, ``aapl.us.csv.gz``, ``AAPL_daily.parquet``). Parsing
and validation use ``features.pricefiles.read_price_file`` (split-adjusts raw Alpha-Vantage-style
files and rejects bad rows); when that module is missing a minimal reader is used instead. Parsed
files are cached by (path, size, mtime), so a daily run re-reads only new or changed files.

No HTTP, so no ``CallRecord`` and no cost: ``on_call`` is never called.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pandas as pd

from .base import PRICE_COLUMNS, NotFoundError, PriceProvider, finish_prices

logger = logging.getLogger("investml.providers")

PATTERNS = ("*.csv", "*.csv.gz", "*.parquet", "*.txt")

try:  # the full parser and validator (another module of this app)
    from features.pricefiles import read_price_file as _read_price_file
except ImportError:  # pragma: no cover - exercised only without features.pricefiles
    _read_price_file = None


_ALIASES = {
    "ticker": ("ticker", "symbol", "name"),
    "date": ("date", "timestamp", "datetime", "day"),
    "adj_close": ("adj_close", "adjusted_close", "adjclose"),
    "volume": ("volume", "vol"),
}


def _ticker_from_name(path: Path) -> str | None:
    stem = path.name
    for suffix in (".gz", ".csv", ".parquet", ".txt"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"(?i)\.us$", "", stem)
    return stem.upper() if re.fullmatch(r"[A-Za-z][A-Za-z0-9.\-]{0,14}", stem) else None


def minimal_read(path: Path) -> pd.DataFrame:
    """Fallback reader: columns ticker, date, open, high, low, close, adj_close, volume; no validation."""
    if path.name.lower().endswith(".parquet"):
        raw = pd.read_parquet(path)
    else:
        raw = pd.read_csv(path, compression="infer")
    raw.columns = [re.sub(r"[\s\-./]+", "_", str(c).strip().lower()) for c in raw.columns]
    for canonical, names in _ALIASES.items():
        for name in names:
            if name in raw.columns and canonical not in raw.columns:
                raw = raw.rename(columns={name: canonical})
    if "ticker" not in raw.columns:
        ticker = _ticker_from_name(path)
        if ticker is None:
            raise ValueError(f"{path.name}: no ticker column and no ticker in the file name")
        raw["ticker"] = ticker
    if "adj_close" not in raw.columns:
        raw["adj_close"] = raw["close"]
    raw["ticker"] = raw["ticker"].astype(str).str.strip().str.upper()
    raw["date"] = pd.to_datetime(raw["date"], errors="coerce", format="mixed")
    raw = raw.dropna(subset=["date", "close"])
    return raw[["ticker", *PRICE_COLUMNS]]


class FileDropProvider(PriceProvider):
    name = "files"
    supports_date_range = True

    def __init__(self, folder: str | Path, *, patterns: Iterable[str] = PATTERNS, recursive: bool = False) -> None:
        self.folder = Path(folder)
        self.patterns = tuple(patterns)
        self.recursive = recursive
        self.on_call = None
        self._cache: dict[Path, tuple[tuple[int, int], pd.DataFrame]] = {}
        self._lock = threading.Lock()
        self.rejected: dict[str, dict[str, int]] = {}

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found: set[Path] = set()
        for pattern in self.patterns:
            found.update(self.folder.rglob(pattern) if self.recursive else self.folder.glob(pattern))
        return sorted(p for p in found if p.is_file())

    def _read(self, path: Path) -> pd.DataFrame:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
        try:
            if _read_price_file is not None:
                parsed = _read_price_file(path)
                bars = parsed.bars
                if parsed.rejected_by_reason:
                    self.rejected[path.name] = parsed.rejected_by_reason
                    logger.info("%s: rejected rows %s", path.name, parsed.rejected_by_reason)
            else:
                bars = minimal_read(path)
        except Exception as exc:  # one bad file must not hide the others
            logger.warning("skipping unreadable price file %s: %s", path.name, exc)
            bars = pd.DataFrame(columns=["ticker", *PRICE_COLUMNS])
        bars = bars.copy()
        bars["ticker"] = bars["ticker"].astype(str).str.upper()
        with self._lock:
            self._cache[path] = (key, bars)
        return bars

    def load_all(self) -> pd.DataFrame:
        """Every valid bar of every file (later files win on the same ticker and date)."""
        frames = [self._read(p) for p in self.files()]
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame(columns=["ticker", *PRICE_COLUMNS])
        return pd.concat(frames, ignore_index=True)

    def symbols(self) -> list[str]:
        return sorted(self.load_all()["ticker"].unique().tolist())

    def fetch_daily(self, symbol: str, *, since: date | None = None) -> pd.DataFrame:
        symbol = symbol.strip().upper()
        parts = []
        for path in self.files():
            bars = self._read(path)
            if not bars.empty:
                rows = bars[bars["ticker"] == symbol]
                if not rows.empty:
                    parts.append(rows)
        if not parts:
            raise NotFoundError(f"no rows for this ticker in {self.folder.name}/", symbol=symbol, provider=self.name)
        frame = pd.concat(parts, ignore_index=True).drop(columns=["ticker"])
        return finish_prices(frame[[c for c in PRICE_COLUMNS if c in frame]], since)
