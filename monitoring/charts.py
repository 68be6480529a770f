"""Plotly figure specs (plain dicts) for the dashboard. Framework-free: numbers in, JSON-able dicts out.

The browser draws them with the ``plotly.min.js`` that ships inside the ``plotly`` wheel (served as
a static file by ``monitoring.staticfinders.PackageAssetsFinder``); nothing is fetched from the
internet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PALETTE = {
    "compute": "#4f46e5",
    "data_api": "#0ea5e9",
    "storage": "#14b8a6",
    "limit": "#dc2626",
    "accent": "#4f46e5",
    "muted": "#94a3b8",
}
SERIES = ["#4f46e5", "#0ea5e9", "#14b8a6", "#f59e0b", "#ec4899", "#8b5cf6", "#22c55e", "#ef4444"]


def _layout(**extra: Any) -> dict[str, Any]:
    layout = {
        "margin": {"l": 56, "r": 16, "t": 16, "b": 48},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "Inter, system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12,
                 "color": "#334155"},
        "legend": {"orientation": "h", "y": -0.18},
        "hovermode": "x unified",
        "xaxis": {"gridcolor": "#e2e8f0", "zeroline": False},
        "yaxis": {"gridcolor": "#e2e8f0", "zeroline": False},
    }
    layout.update(extra)
    return layout


def cost_chart(series: Sequence[Mapping[str, Any]], *, limit: float,
               categories: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Stacked daily cost bars by category, with the daily limit as a line."""
    days = [row["day"].isoformat() for row in series]
    data: list[dict[str, Any]] = [
        {"type": "bar", "name": label, "x": days, "y": [round(float(row.get(value, 0.0)), 6) for row in series],
         "marker": {"color": PALETTE.get(value, PALETTE["muted"])},
         "hovertemplate": "$%{y:.4f}<extra>" + label + "</extra>"}
        for value, label in categories
    ]
    data.append({"type": "scatter", "mode": "lines", "name": f"Daily limit (${limit:.2f})", "x": days,
                 "y": [limit] * len(days), "line": {"color": PALETTE["limit"], "dash": "dash", "width": 2},
                 "hovertemplate": "$%{y:.2f}<extra>limit</extra>"})
    return {"data": data, "layout": _layout(barmode="stack", yaxis={"title": "USD", "gridcolor": "#e2e8f0",
                                                                     "rangemode": "tozero"})}


def performance_chart(records_by_version: Mapping[str, Sequence[Any]], *, metric: str,
                      floors: Mapping[str, float | None] | None = None) -> dict[str, Any]:
    """Rolling live ``metric`` per version over time (one line each), with each version's floor."""
    data = []
    for i, (label, records) in enumerate(records_by_version.items()):
        color = SERIES[i % len(SERIES)]
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": f"{label} {metric}",
            "x": [r.day.isoformat() for r in records], "y": [getattr(r, metric) for r in records],
            "line": {"color": color, "width": 2}, "marker": {"size": 5},
        })
        floor = (floors or {}).get(label)
        if floor is not None and records:
            data.append({
                "type": "scatter", "mode": "lines", "name": f"{label} alert floor",
                "x": [records[0].day.isoformat(), records[-1].day.isoformat()], "y": [floor, floor],
                "line": {"color": color, "dash": "dot", "width": 1},
            })
    return {"data": data, "layout": _layout(yaxis={"title": metric, "gridcolor": "#e2e8f0"})}


def validated_metrics_chart(versions: Sequence[Any], *, metrics: Sequence[str] = ("accuracy", "rank_ic", "ic")
                            ) -> dict[str, Any]:
    """Walk-forward (validated) metrics of each version, grouped bars, oldest version first."""
    labels = [f"v{v.version}" for v in versions]
    data = []
    for i, metric in enumerate(metrics):
        values = [(v.metrics or {}).get(metric) for v in versions]
        data.append({"type": "bar", "name": metric, "x": labels, "y": values, "offsetgroup": str(i),
                     "marker": {"color": SERIES[i % len(SERIES)]},
                     "yaxis": "y" if metric == "accuracy" else "y2"})
    return {"data": data, "layout": _layout(
        barmode="group",
        yaxis={"title": "accuracy", "gridcolor": "#e2e8f0", "rangemode": "tozero"},
        yaxis2={"title": "IC", "overlaying": "y", "side": "right", "showgrid": False, "rangemode": "tozero"},
        xaxis={"type": "category"},
        margin={"l": 56, "r": 56, "t": 16, "b": 48},
    )}


def drift_heatmap(matrix: Mapping[str, Any], *, psi_threshold: float) -> dict[str, Any]:
    """Per-feature PSI (rows) over drift reports (columns)."""
    zmax = max([psi_threshold * 2] + [v for row in matrix["psi"] for v in row if v is not None])
    return {
        "data": [{
            "type": "heatmap", "x": matrix["labels"], "y": matrix["features"], "z": matrix["psi"],
            "zmin": 0, "zmax": zmax, "colorbar": {"title": {"text": "PSI"}},
            "colorscale": [[0, "#f0fdf4"], [min(psi_threshold / zmax, 1) * 0.5, "#fef9c3"],
                           [min(psi_threshold / zmax, 1), "#fdba74"], [1, "#b91c1c"]],
            "hovertemplate": "%{y}<br>%{x}<br>PSI %{z:.3f}<extra></extra>",
            "xgap": 1, "ygap": 1,
        }],
        "layout": _layout(hovermode="closest", margin={"l": 150, "r": 16, "t": 16, "b": 110},
                          xaxis={"type": "category", "tickangle": -35}, yaxis={"automargin": True},
                          height=max(360, 30 * len(matrix["features"]) + 150)),
    }


def drift_share_chart(matrix: Mapping[str, Any], *, threshold: float) -> dict[str, Any]:
    labels = matrix["labels"]
    return {"data": [
        {"type": "bar", "name": "drift share", "x": labels, "y": matrix["shares"],
         "marker": {"color": [PALETTE["limit"] if s > threshold else PALETTE["accent"] for s in matrix["shares"]]}},
        {"type": "scatter", "mode": "lines", "name": f"threshold {threshold:.0%}", "x": labels,
         "y": [threshold] * len(labels), "line": {"color": PALETTE["limit"], "dash": "dash"}},
    ], "layout": _layout(yaxis={"title": "share of features drifted", "tickformat": ".0%", "range": [0, 1],
                                "gridcolor": "#e2e8f0"}, xaxis={"type": "category", "tickangle": -35},
                         legend={"orientation": "h", "y": 1.15, "x": 0}, margin={"l": 56, "r": 16, "t": 36, "b": 110})}


def stage_chart(stages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seconds per stage of a run, as horizontal bars in run order."""
    names = [str(s.get("name", "?")) for s in stages]
    colors = {"failed": "#dc2626", "succeeded": "#16a34a", "running": "#f59e0b"}
    return {"data": [{
        "type": "bar", "orientation": "h", "y": names, "x": [float(s.get("seconds") or 0) for s in stages],
        "marker": {"color": [colors.get(str(s.get("status")), PALETTE["accent"]) for s in stages]},
        "hovertemplate": "%{y}: %{x:.1f}s<extra></extra>",
    }], "layout": _layout(hovermode="closest", yaxis={"autorange": "reversed", "automargin": True},
                          xaxis={"title": "seconds", "gridcolor": "#e2e8f0"},
                          height=max(220, 28 * len(names) + 80))}
