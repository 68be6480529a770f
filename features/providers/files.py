"""Local file-drop provider: a folder where CSV, CSV.gz or Parquet price files are dropped daily.

Files are either long format (a ticker/symbol column, many tickers) or one file per ticker (the
ticker comes from the file name: ``AAPL.csv``, ``aapl.us.csv.gz``, ``AAPL_daily.parquet``). Parsing
and validation use ``features.pricefiles.read_price_file`` (split-adjusts raw Alpha-Vantage-style
files and rejects bad rows). Parsed files are cached by (path, size, mtime), so a daily run re-reads only new or changed files.

No HTTP, so no ``CallRecord`` and no cost: ``on_call`` is never called.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pandas as pd

from features.pricefiles import read_price_file

from .base import PRICE_COLUMNS, NotFoundError, PriceProvider, finish_prices

logger = logging.getLogger("investml.providers")

PATTERNS = ("*.csv", "*.csv.gz", "*.parquet", "*.txt")

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
            parsed = read_price_file(path)
            bars = parsed.bars
            if parsed.rejected_by_reason:
                self.rejected[path.name] = parsed.rejected_by_reason
                logger.info("%s: rejected rows %s", path.name, parsed.rejected_by_reason)
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
