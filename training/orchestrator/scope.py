"""A run's scope: the whole universe or one ticker list, the key that allows one active run each."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

UNIVERSE = "universe"


def normalize_tickers(tickers: Sequence[str] | str | None) -> list[str]:
    if tickers is None:
        return []
    if isinstance(tickers, str):
        tickers = tickers.split(",")
    return sorted({t.strip().upper() for t in tickers if t and t.strip()})


def scope_for(tickers: Sequence[str]) -> str:
    """``"universe"`` for the whole universe, else ``"tickers:<sha256[:16]>"`` of the sorted list."""
    if not tickers:
        return UNIVERSE
    digest = hashlib.sha256(",".join(sorted(tickers)).encode("utf-8")).hexdigest()[:16]
    return f"tickers:{digest}"
