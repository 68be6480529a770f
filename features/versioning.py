"""What a feature-set version pins, and how versions bump. Framework-free (no Django).

The content of a version is the ordered feature list with each feature's parameters, the engine
parameters and the storage format (``version_content``); its sha256 over canonical JSON
(``content_hash``) identifies it, and a new content gets the semantic version ``next_feature_set_version`` says.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from features.feature_sets import FeatureSpec
from features.store_format import LABEL_HORIZONS, STORE_DTYPE, STORE_FORMAT

__all__ = ["content_hash", "feature_definitions", "next_feature_set_version", "version_content"]


def _suffix_int(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def feature_definitions(spec: FeatureSpec) -> list[dict[str, Any]]:
    """The ordered feature list ``[{name, group, params}]`` of a spec (``spec.columns()`` order)."""
    s = spec
    macd = {"fast": s.macd_fast, "slow": s.macd_slow, "signal": s.macd_signal, "input": "adj_close"}
    bb = {"period": s.bb_period, "nstd": s.bb_nstd, "input": "adj_close"}

    def params_of(name: str, group: str) -> dict[str, Any]:
        if group == "technical":
            if name.startswith("rsi_"):
                return {"period": s.rsi_period, "input": "adj_close"}
            if name.startswith("macd"):
                return dict(macd)
            if name.startswith("bb_"):
                return dict(bb)
            if name.startswith(("sma_", "ema_", "close_to_sma_", "close_to_ema_")):
                return {"period": _suffix_int(name), "input": "adj_close"}
            if name.startswith("ret_"):
                return {"horizon": _suffix_int(name), "kind": "simple"}
            if name.startswith("atr_"):
                return {"period": s.atr_period, "input": "adjusted high/low/close"}
            if name.startswith("obv_"):
                return {"window": s.obv_window, "kind": "windowed, signed volume / volume"}
        if group == "market":
            if name.startswith("vol_"):
                return {"window": _suffix_int(name), "annualization": s.annualization, "kind": "log returns"}
            if name.startswith("volume_"):
                return {"window": s.volume_window}
            if name.startswith(("beta_", "corr_")):
                return {"window": s.beta_window, "min_obs": s.beta_min_obs, "market": "SPY else equal-weighted"}
            if name.startswith("rel_ret_"):
                return {"window": s.rel_ret_window}
        if group == "fundamentals":
            return {"join": "latest snapshot dated strictly before the bar"}
        if group == "alpha158":
            tail = name.rsplit("_", 1)[1]
            return {"family": "Qlib Alpha158", "window": int(tail)} if tail.isdigit() else {"family": "Qlib Alpha158"}
        if group == "sentiment":
            if name.startswith(("sent_mean_", "news_count_")):
                return {"window": _suffix_int(name)}
        if group == "social":
            kind = name.split("_")[1]
            return {"window": _suffix_int(name), "kind": kind, "posts": "after the 16:00 close: next session"}
        return {}

    return [
        {"name": name, "group": group, "params": params_of(name, group)}
        for group, names in spec.groups().items()
        for name in names
    ]


def version_content(spec: FeatureSpec) -> dict[str, Any]:
    """Everything a feature-set version pins: features, engine parameters, storage format."""
    return {
        "features": feature_definitions(spec),
        "params": spec.to_dict(),
        "storage": {
            "format": STORE_FORMAT,
            "dtype": np.dtype(STORE_DTYPE).name,
            "label_horizons": list(LABEL_HORIZONS),
        },
    }


def content_hash(content: dict[str, Any]) -> str:
    """sha256 over canonical JSON (sorted keys, no whitespace)."""
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _parse_semver(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in version.split("."))
    return major, minor, patch


def next_feature_set_version(
    previous_version: str | None,
    previous_features: list[dict[str, Any]] | None,
    previous_params: dict[str, Any] | None,
    new_features: list[dict[str, Any]],
    new_params: dict[str, Any],
) -> str:
    """Semantic version of a new content, relative to the highest existing version.

    * major: a feature was removed or renamed (a consumer's column disappears);
    * minor: features added or reordered, or a parameter changed (a feature's or an engine one);
    * patch: same features and parameters, other stored content changed (storage format, labels).
    """
    if previous_version is None:
        return "1.0.0"
    major, minor, patch = _parse_semver(previous_version)
    old = {f["name"]: f for f in previous_features or []}
    new = {f["name"]: f for f in new_features}
    if set(old) - set(new):
        return f"{major + 1}.0.0"
    changed = (
        list(old) != list(new)
        or any(old[n] != new[n] for n in old)
        or (previous_params or {}) != new_params
    )
    if changed:
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"
