"""The evaluation report's table, numpy/pandas only (no Django): each model's and each naive
baseline's metrics on the out-of-sample rows every model scored (``report_from_tables``, with the
benchmark protocol of ``training.report``), and the table as text or Markdown (``format_report``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from features.common import jsonable
from registry.gate import metric_on_rows, window_summary
from training.report import DEFAULT_COST_BPS, report_row
from training.walk_forward import BASELINE_NAMES, baseline_view, oof_table

# (key of ``training.report.report_row``, column label); ``{cost_bps:g}`` is the report's cost a side
REPORT_COLUMNS = (
    ("ic", "IC"),
    ("icir", "ICIR"),
    ("rank_ic", "Rank IC"),
    ("rank_icir", "Rank ICIR"),
    ("rank_ic_t", "Rank IC t"),
    ("annual_return", "Ann. return (net, {cost_bps:g} bps)"),
    ("information_ratio", "IR"),
    ("turnover", "Turnover"),
    ("max_drawdown", "Max DD"),
)


PREDICTION_COLUMNS = ["ticker", "date", "expected_return", "prob_up", "confidence", "fold"]


def reused_predictions(name: str, saved: pd.DataFrame, labels: pd.DataFrame, test_dates: np.ndarray) -> pd.DataFrame:
    """An earlier report's predictions of ``name`` joined to this report's labels; refused unless
    they cover exactly this report's test dates (other folds would mix protocols in one table)."""
    missing = [c for c in PREDICTION_COLUMNS if c not in saved.columns]
    if missing:
        raise ValueError(f"saved predictions of {name} lack columns {missing}")
    saved_dates = np.unique(pd.to_datetime(saved["date"]).to_numpy())
    if len(saved_dates) != len(test_dates) or not np.array_equal(saved_dates, test_dates.astype(saved_dates.dtype)):
        raise ValueError(f"saved predictions of {name} cover {len(saved_dates)} dates, this report's folds "
                         f"test {len(test_dates)}: run both with the same window, folds and horizon")
    return oof_table(saved, labels)


def report_from_tables(tables: dict[str, pd.DataFrame], *, horizon: int,
                       extra: dict[str, Any] | None = None, cost_bps: float | None = None,
                       hold_days: int = 1) -> dict[str, Any]:
    """Metrics of each model and of the baselines on the rows every table scored.

    ``models``/``baselines``: ``metric_on_rows`` of each (``METRIC_KEYS``); ``protocol``: the
    benchmark protocol's numbers of the same rows, ``{"models": {name: row}, "baselines": {name: row}}``
    with rows of ``training.report.report_row`` (the long-short book net of ``cost_bps`` a side,
    default 10, also returned as ``cost_bps``).
    """
    cost = DEFAULT_COST_BPS if cost_bps is None else float(cost_bps)
    keys = None
    for table in tables.values():
        scored = table.loc[np.isfinite(table["expected_return"].to_numpy(dtype=np.float64)), ["ticker", "date"]]
        keys = scored if keys is None else keys.merge(scored, on=["ticker", "date"], how="inner")
    assert keys is not None
    models: dict[str, Any] = {}
    protocol: dict[str, dict[str, Any]] = {"models": {}, "baselines": {}}
    common = None
    for name, table in tables.items():
        common = table.merge(keys, on=["ticker", "date"], how="inner")
        models[name] = metric_on_rows(common, horizon=horizon)
        protocol["models"][name] = report_row(common, horizon=horizon, cost_bps=cost, hold_days=hold_days)
    assert common is not None
    baselines = {}
    for b in BASELINE_NAMES:
        view = baseline_view(common, b)
        baselines[b] = metric_on_rows(view, horizon=horizon)
        protocol["baselines"][b] = report_row(view, horizon=horizon, cost_bps=cost, hold_days=hold_days)
    return jsonable({"horizon": horizon, "window": window_summary(common), "models": models,
                     "baselines": baselines, "protocol": protocol, "cost_bps": cost, "hold_days": int(hold_days),
                     **(extra or {})})


def format_report(report: dict[str, Any], *, markdown: bool = False) -> str:
    """The Qlib-style benchmark table (one row per learner, the ensemble and each baseline), then
    the mean daily rank IC of each calendar year."""
    cost = float(report.get("cost_bps", 10.0))
    protocol = report["protocol"]
    named_rows = [(name, row) for name, row in protocol["models"].items()] + [
        (f"baseline: {name}", row) for name, row in protocol["baselines"].items()
    ]

    def cell(key: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        if key in ("annual_return", "max_drawdown"):
            return f"{value * 100:.2f}%"
        if key in ("ic", "rank_ic"):
            return f"{value:.4f}"
        return f"{value:.2f}" if key == "rank_ic_t" else f"{value:.3f}"

    def render(header: list[str], body: list[list[str]]) -> list[str]:
        if markdown:
            return ["| " + " | ".join(header) + " |",
                    "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
                    *["| " + " | ".join(row) + " |" for row in body]]
        widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
        return ["  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(row))
                for row in [header, *body]]

    header = ["model", *[label.format(cost_bps=cost) for _, label in REPORT_COLUMNS]]
    body = [[name, *[cell(k, row.get(k)) for k, _ in REPORT_COLUMNS]] for name, row in named_rows]
    years = sorted({str(y) for _, row in named_rows for y in (row.get("per_year") or {})}, key=int)
    year_body = [[name, *[cell("rank_ic", (row.get("per_year") or {}).get(y)) for y in years]]
                 for name, row in named_rows]

    w = report["window"]
    title = (f"Walk-forward out of sample, {w['start']}..{w['end']} ({w['dates']} dates, {w['rows']:,} rows), "
             f"{report.get('tickers', '?')} tickers, horizon {report['horizon']} days")
    wf = report.get("walk_forward") or {}
    if wf.get("protocol") == "yearly":
        title += f"; one fold per calendar year, refitted on all earlier dates, gap {wf['gap_days']}"
    elif wf.get("protocol") == "folds":
        title += f"; {wf['n_folds']} folds of {wf['test_days']} days, gap {wf['gap_days']}"
    elif wf.get("protocol"):
        title += f"; {wf['n_folds']} given folds"
    hold = int(report.get("hold_days", 1))
    held = "daily, held one day" if hold == 1 else f"rebalanced every {hold} trading days"
    note = (f"Long-short book: top-minus-bottom decile, {held}, {cost:g} bps a side; Rank IC t adjusted for "
            "overlapping labels; turnover per day (1 = one leg replaced).")
    sep = [""] if markdown else []
    return "\n".join([title, *sep, *render(header, body), "", note, "", "Rank IC by year", *sep,
                      *render(["model", *years], year_body)])
