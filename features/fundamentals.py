"""Reading fundamentals snapshot files. Framework-free: a CSV in, a normalized frame out.

Each snapshot lists, per ticker, values as they were known on the snapshot's date. Sources change
columns and units over time, so units are decided from the column name or, where the name does not
say, from the values' scale (documented per field below), never from the file's date.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

SNAPSHOT_COLUMNS = ("ticker", "as_of", "price", "pe_ratio", "eps", "market_cap", "dividend_yield", "sector")

_ALIASES = {
    "ticker": ("symbol", "ticker"),
    "price": ("price", "last_price", "close"),
    "pe_ratio": ("price_earnings", "pe", "pe_ratio", "p_e"),
    "eps": ("earnings_share", "eps", "earnings_per_share"),
    "market_cap": ("market_cap", "market_capitalization", "market_cap_usd", "market_cap_usd_bn", "marketcap"),
    "dividend_yield": ("dividend_yield", "div_yield", "yield"),
    "sector": ("sector", "gics_sector"),
}
_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


class FundamentalsFileError(ValueError):
    pass


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def snapshot_date_from_name(path: Path) -> date | None:
    match = re.search(r"(\d{4}-\d{2}-\d{2})", path.name)
    return date.fromisoformat(match.group(1)) if match else None


def _parse_amount(series: pd.Series) -> pd.Series:
    """Numbers, possibly written "63.802B" / "512.3M"."""
    if pd.api.types.is_numeric_dtype(series):
        return series.astype("float64")
    text = series.astype("string").str.strip().str.replace(",", "", regex=False).str.replace("$", "", regex=False)
    match = text.str.extract(r"^(-?[0-9.]+)\s*([KMBTkmbt]?)$")
    number = pd.to_numeric(match[0], errors="coerce")
    scale = match[1].str.upper().map(_SUFFIX).astype("float64").fillna(1.0)
    return (number * scale).astype("float64")


def parse_snapshot(path: str | Path, *, as_of: date | None = None) -> pd.DataFrame:
    path = Path(path)
    as_of = as_of or snapshot_date_from_name(path)
    if as_of is None:
        raise FundamentalsFileError(f"{path}: no date in the file name; pass the snapshot's as-of date")
    try:
        raw = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise FundamentalsFileError(f"{path}: cannot read: {exc}") from exc
    columns = {_norm(c): c for c in raw.columns}
    picked: dict[str, str] = {}
    for field, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in columns:
                picked[field] = columns[alias]
                break
    if "ticker" not in picked:
        raise FundamentalsFileError(f"{path}: no Symbol/Ticker column (found {list(raw.columns)})")

    out = pd.DataFrame({"ticker": raw[picked["ticker"]].astype("string").str.strip().str.upper()})
    for field in ("price", "pe_ratio", "eps", "market_cap", "dividend_yield"):
        out[field] = _parse_amount(raw[picked[field]]) if field in picked else np.nan
    out["sector"] = raw[picked["sector"]].fillna("").astype(str).str.strip() if "sector" in picked else ""

    cap_name = _norm(picked.get("market_cap", ""))
    cap = out["market_cap"]
    # "Market Cap" once meant USD billions (values like 70.5); no listed company is worth under
    # $1M, so a median below 1e6 means the column is in billions.
    if cap_name.endswith("_bn") or (cap.notna().any() and cap.median() < 1e6):
        out["market_cap"] = cap * 1e9
    # Dividend yield was a percent (2.31) in older files and a fraction (0.0207) later. Yields
    # above 30% are rare; a median above 0.3 can only be percent.
    dy = out["dividend_yield"]
    if dy.notna().any() and dy.median() > 0.3:
        out["dividend_yield"] = dy / 100.0
    out.loc[out["pe_ratio"] <= 0, "pe_ratio"] = np.nan  # a non-positive P/E is "not meaningful"
    out["as_of"] = as_of
    out = out[out["ticker"].notna() & (out["ticker"] != "")]
    out = out.drop_duplicates("ticker", keep="first")
    return out[list(SNAPSHOT_COLUMNS)].reset_index(drop=True)


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # the provider's own parse leaves numbers as floats, "None"/"-" as None
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def overview_snapshot(payload: dict) -> dict[str, float | str | None]:
    """One ticker's Alpha Vantage ``OVERVIEW`` as a snapshot row's values (the fields of
    ``SNAPSHOT_COLUMNS`` but ticker and as_of), in the units the file loader stores: market cap in
    USD, dividend yield a fraction (Alpha Vantage writes 0.0044; a value above 1 can only be a
    percent), a non-positive P/E "not meaningful" (None). OVERVIEW carries no price."""
    pe = _number(payload.get("PERatio"))
    if pe is None:
        pe = _number(payload.get("TrailingPE"))
    dividend = _number(payload.get("DividendYield"))
    if dividend is not None and dividend > 1:
        dividend /= 100.0
    return {
        "price": None,
        "pe_ratio": pe if pe is not None and pe > 0 else None,
        "eps": _number(payload.get("EPS")),
        "market_cap": _number(payload.get("MarketCapitalization")),
        "dividend_yield": dividend,
        "sector": str(payload.get("Sector") or "").strip()[:100],
    }
