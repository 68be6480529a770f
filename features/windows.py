"""Trailing-window arithmetic shared by the feature engines (numpy only, no Django).

``rolling_sum`` is the reason this module exists: its value at a row is the same expression of the
window's values wherever the series starts, which is what makes truncated, incremental and full
builds of every feature set agree.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rolling_sum", "safe_div", "window_var"]


def rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing-window sum of ``w`` values along the last axis; NaN where fewer than w values.

    The window is split into power-of-two blocks at fixed offsets from its start (binary digits of
    w), built by pairwise doubling: O(n log w), no prefix sums, so the result at position i is the
    same expression of x[i-w+1..i] wherever the series starts (bit-identical under truncation or a
    shorter history). NaNs inside a window propagate: callers pass masked values and counts.
    """
    n = x.shape[-1]
    out = np.full(x.shape, np.nan)
    if w <= 0 or n < w:
        return out
    levels = [x]
    top = w.bit_length() - 1
    for k in range(top):
        q = levels[-1]
        h = 1 << k
        levels.append(q[..., :-h] + q[..., h:])
    m = n - w + 1
    res = None
    off = 0
    for k in range(top, -1, -1):
        if (w >> k) & 1:
            seg = levels[k][..., off : off + m]
            res = seg if res is None else res + seg
            off += 1 << k
    out[..., w - 1 :] = res
    return out


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den is 0 or non-finite (never inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    out[~np.isfinite(out)] = np.nan
    return out


def window_var(s1: np.ndarray, s2: np.ndarray, n: np.ndarray | float) -> np.ndarray:
    """Sample variance (ddof=1) from window sums; rounding noise of a constant window -> 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ss = s2 - s1 * s1 / n
        var = ss / (n - 1)
        tiny = ss <= 1e-12 * s2
    var[tiny] = 0.0
    return var
