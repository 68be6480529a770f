"""Stock universe from the exchanges' symbol-directory files (Nasdaq Trader "SymbolDirectory").

``nasdaqlisted.txt``::

    Symbol|Security Name|Market Category|Test Issue|Financial Status|Round Lot Size|ETF|NextShares
    AAPL|Apple Inc. - Common Stock|Q|N|N|100|N|N
    File Creation Time: 0628202421:32|||||||

``otherlisted.txt``::

    ACT Symbol|Security Name|Exchange|CQS Symbol|ETF|Round Lot Size|Test Issue|NASDAQ Symbol
    A|Agilent Technologies, Inc. Common Stock|N|A|N|100|N|A
    File Creation Time: 0628202421:32|||||||

Exchange codes of ``otherlisted``: A = NYSE American (AMEX), N = NYSE, P = NYSE Arca, Z = Cboe BZX,
V = IEX. Test issues are dropped; exchanges are mapped to NYSE / NASDAQ / AMEX, anything else to
OTHER. The result is a DataFrame ``symbol, name, exchange, is_etf`` with the file creation time in
``df.attrs["created"]`` (a datetime, or None).

Framework-free (pandas only).
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd

__all__ = [
    "EXCHANGE_CODES",
    "NASDAQ_HEADER",
    "OTHER_HEADER",
    "UNIVERSE_COLUMNS",
    "file_creation_time",
    "load_universe",
    "parse_symbol_directory",
    "read_nasdaq_listed",
    "read_other_listed",
]

UNIVERSE_COLUMNS = ["symbol", "name", "exchange", "is_etf"]
NASDAQ_HEADER = ["Symbol", "Security Name", "Market Category", "Test Issue", "Financial Status",
                 "Round Lot Size", "ETF", "NextShares"]
OTHER_HEADER = ["ACT Symbol", "Security Name", "Exchange", "CQS Symbol", "ETF", "Round Lot Size",
                "Test Issue", "NASDAQ Symbol"]
EXCHANGE_CODES = {"A": "AMEX", "N": "NYSE", "P": "OTHER", "Z": "OTHER", "V": "OTHER"}
EXCHANGES = ("NYSE", "NASDAQ", "AMEX", "OTHER")

_TRAILER = re.compile(r"^\s*File Creation Time:\s*(\d{8})(\d{2}):(\d{2})", re.IGNORECASE)
# Warrants, units, rights and preferreds: by ACT/CQS suffix or by security name.
_DERIVATIVE_SYMBOL = re.compile(r"(\$|\.WS|\.W$|\.U$|\.R$|\.RT$|\+|=|\^|#)", re.IGNORECASE)
_DERIVATIVE_NAME = re.compile(r"\b(warrants?|units?|rights?|preferred|depositary shares? representing .*preferred|"
                              r"notes? due|debentures?|subordinated)\b", re.IGNORECASE)


Source = str | Path | bytes | io.IOBase


def _read_text(source: Source) -> str:
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, io.IOBase):
        data = source.read()
        if isinstance(data, str):
            return data
    elif isinstance(source, Path) or ("\n" not in source and "|" not in source):
        path = Path(source)
        data = path.read_bytes()
    else:
        return source
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8-sig", errors="replace")


def file_creation_time(text: str) -> datetime | None:
    """The ``File Creation Time: MMDDYYYYHH:MM`` trailer as a datetime (None when absent)."""
    for line in reversed(text.strip().splitlines()):
        match = _TRAILER.match(line)
        if match:
            try:
                return datetime.strptime(f"{match.group(1)}{match.group(2)}{match.group(3)}", "%m%d%Y%H%M")
            except ValueError:
                return None
    return None


def _table(text: str) -> pd.DataFrame:
    lines = [ln for ln in text.splitlines() if ln.strip() and not _TRAILER.match(ln)]
    if not lines:
        raise ValueError("empty symbol directory file")
    # keep_default_na=False: "NA" (and "NULL", "N/A") are real tickers.
    frame = pd.read_csv(io.StringIO("\n".join(lines)), sep="|", dtype=str, keep_default_na=False,
                        na_values=[], quoting=3)
    frame.columns = [c.strip() for c in frame.columns]
    frame = frame.loc[:, [c for c in frame.columns if c and not c.startswith("Unnamed")]]
    return frame.apply(lambda col: col.str.strip())


def _finish(frame: pd.DataFrame, created: datetime | None) -> pd.DataFrame:
    frame = frame[frame["symbol"] != ""]
    frame = frame.drop_duplicates("symbol", keep="first").sort_values("symbol").reset_index(drop=True)
    frame["is_etf"] = frame["is_etf"].astype(bool)
    frame = frame[UNIVERSE_COLUMNS]
    frame.attrs["created"] = created
    return frame


def read_nasdaq_listed(source: Source) -> pd.DataFrame:
    """Parse ``nasdaqlisted.txt`` (all rows are Nasdaq-listed)."""
    text = _read_text(source)
    table = _table(text)
    missing = [c for c in ("Symbol", "Security Name", "Test Issue", "ETF") if c not in table.columns]
    if missing:
        raise ValueError(f"not a nasdaqlisted.txt file: missing columns {missing}")
    table = table[table["Test Issue"].str.upper() != "Y"]
    frame = pd.DataFrame({
        "symbol": table["Symbol"].str.upper(),
        "name": table["Security Name"],
        "exchange": "NASDAQ",
        "is_etf": table["ETF"].str.upper() == "Y",
    })
    return _finish(frame, file_creation_time(text))


def read_other_listed(source: Source) -> pd.DataFrame:
    """Parse ``otherlisted.txt`` (NYSE, NYSE American, NYSE Arca, Cboe BZX, IEX)."""
    text = _read_text(source)
    table = _table(text)
    missing = [c for c in ("ACT Symbol", "Security Name", "Exchange", "Test Issue", "ETF") if c not in table.columns]
    if missing:
        raise ValueError(f"not an otherlisted.txt file: missing columns {missing}")
    table = table[table["Test Issue"].str.upper() != "Y"]
    frame = pd.DataFrame({
        "symbol": table["ACT Symbol"].str.upper(),
        "name": table["Security Name"],
        "exchange": table["Exchange"].str.upper().map(EXCHANGE_CODES).fillna("OTHER"),
        "is_etf": table["ETF"].str.upper() == "Y",
    })
    return _finish(frame, file_creation_time(text))


def parse_symbol_directory(source: Source) -> pd.DataFrame:
    """Parse either file, recognised by its header line."""
    text = _read_text(source)
    header = text.lstrip().splitlines()[0] if text.strip() else ""
    if header.startswith("Symbol|"):
        return read_nasdaq_listed(text)
    if header.startswith("ACT Symbol|"):
        return read_other_listed(text)
    raise ValueError(f"unrecognised symbol directory header: {header[:60]!r}")


def is_derivative(symbol: str, name: str) -> bool:
    """Warrants, units, rights, preferreds and notes (by symbol suffix or security name)."""
    return bool(_DERIVATIVE_SYMBOL.search(symbol) or _DERIVATIVE_NAME.search(name))


def load_universe(
    sources: Iterable[Source],
    *,
    exchanges: Iterable[str] | None = ("NYSE", "NASDAQ", "AMEX"),
    include_etfs: bool = True,
    common_only: bool = False,
) -> pd.DataFrame:
    """Combine symbol-directory files into one universe.

    ``exchanges``: keep only these (None keeps OTHER too). ``include_etfs=False`` drops ETFs.
    ``common_only=True`` also drops warrants, units, rights, preferreds and notes. A symbol in
    several files keeps its first row. ``attrs["created"]`` is the newest file creation time.
    """
    frames = [parse_symbol_directory(s) for s in sources]
    if not frames:
        out = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                            zip(UNIVERSE_COLUMNS, ["object", "object", "object", "bool"], strict=True)})
        out.attrs["created"] = None
        return out
    created = [f.attrs.get("created") for f in frames if f.attrs.get("created")]
    frame = pd.concat(frames, ignore_index=True)
    if exchanges is not None:
        frame = frame[frame["exchange"].isin({e.upper() for e in exchanges})]
    if not include_etfs:
        frame = frame[~frame["is_etf"]]
    if common_only:
        mask = [not is_derivative(s, n) for s, n in zip(frame["symbol"], frame["name"], strict=True)]
        frame = frame[mask]
    frame = frame.drop_duplicates("symbol", keep="first").sort_values("symbol").reset_index(drop=True)
    frame.attrs["created"] = max(created) if created else None
    return frame
