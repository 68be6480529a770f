"""Feature sets: the parameters a feature-set version pins and the ordered columns they name.

``FeatureSpec`` holds the parameters, derives the column names (by group), the scale-free model
inputs, the lookback the engine needs for an exact incremental row, and the version hash; the
named sets a build knows (``FEATURE_SETS``) and the default spec's column lists live here too.
No Django (the engine, the builds and the learners all read them).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from features.alpha158 import alpha158_columns, alpha158_lookback
from features.normalize import CS_NORMALIZATIONS

__all__ = [
    "ALPHA158_SPEC",
    "DEFAULT_SPEC",
    "FEATURE_COLUMNS",
    "FEATURE_GROUPS",
    "FEATURE_SETS",
    "MAX_LOOKBACK",
    "MODEL_FEATURE_COLUMNS",
    "FeatureSpec",
]


@dataclass(frozen=True)
class FeatureSpec:
    """Parameters of the feature set. Column names are derived from them."""

    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_period: int = 20
    bb_nstd: float = 2.0
    sma_periods: tuple[int, ...] = (5, 10, 20, 50, 200)
    ema_periods: tuple[int, ...] = (12, 26, 50)
    close_to_sma: tuple[int, ...] = (20, 50, 200)
    close_to_ema: tuple[int, ...] = (50,)
    return_horizons: tuple[int, ...] = (1, 5, 10, 20)
    atr_period: int = 14
    obv_window: int = 20
    vol_windows: tuple[int, ...] = (5, 20, 60)
    annualization: int = 252
    volume_window: int = 20
    beta_window: int = 60
    beta_min_obs: int = 48
    rel_ret_window: int = 20
    sent_windows: tuple[int, ...] = (5, 20)
    news_count_window: int = 5
    # Recursive indicators must decay their seed below this (relative) within MAX_LOOKBACK.
    seed_decay: float = 1e-15
    # Qlib's Alpha158 family (``features.alpha158``) over these windows; () leaves it out.
    alpha158_windows: tuple[int, ...] = ()
    # Per-date normalization every reader of the store applies ("none" | "robust_zscore";
    # ``features.normalize``): part of the version, so training and serving see the same values.
    cs_normalization: str = "none"
    # Social-media posts (``features.social``): post-weighted mean score, post count and bullish share
    # over these windows, and the day's posts against the ticker's own trailing
    # ``social_volume_window``-bar average; () leaves the group out.
    social_windows: tuple[int, ...] = ()
    social_volume_window: int = 20

    @classmethod
    def from_params(cls, params: FeatureSpec | dict[str, Any] | None) -> FeatureSpec:
        if params is None:
            return DEFAULT_SPEC
        if isinstance(params, FeatureSpec):
            return params
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown feature parameters: {sorted(unknown)}")
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        spec = replace(DEFAULT_SPEC, **clean)
        if spec.cs_normalization not in CS_NORMALIZATIONS:
            raise ValueError(f"cs_normalization must be one of {CS_NORMALIZATIONS}, got {spec.cs_normalization!r}")
        if any(int(w) != w or w < 1 for w in spec.social_windows) or spec.social_volume_window < 1:
            raise ValueError("social_windows and social_volume_window must be positive whole numbers of bars")
        missing_sma = set(spec.close_to_sma) - set(spec.sma_periods)
        missing_ema = set(spec.close_to_ema) - set(spec.ema_periods)
        if missing_sma or missing_ema:
            raise ValueError("close_to_sma/close_to_ema periods must be among sma_periods/ema_periods")
        return spec

    # --- names ---------------------------------------------------------------------------
    @property
    def macd_tag(self) -> str:
        return f"{self.macd_fast}_{self.macd_slow}_{self.macd_signal}"

    @property
    def bb_tag(self) -> str:
        nstd = int(self.bb_nstd) if float(self.bb_nstd).is_integer() else self.bb_nstd
        return f"{self.bb_period}_{nstd}"

    def groups(self) -> dict[str, list[str]]:
        m, b = self.macd_tag, self.bb_tag
        technical = [
            f"rsi_{self.rsi_period}",
            f"macd_{m}",
            f"macd_signal_{m}",
            f"macd_hist_{m}",
            f"bb_upper_{b}",
            f"bb_middle_{b}",
            f"bb_lower_{b}",
            f"bb_pctb_{b}",
            f"bb_width_{b}",
            *[f"sma_{p}" for p in self.sma_periods],
            *[f"ema_{p}" for p in self.ema_periods],
            *[f"close_to_sma_{p}" for p in self.close_to_sma],
            *[f"close_to_ema_{p}" for p in self.close_to_ema],
            *[f"ret_{h}" for h in self.return_horizons],
            f"atr_{self.atr_period}",
            f"obv_{self.obv_window}",
        ]
        market = [
            *[f"vol_{w}" for w in self.vol_windows],
            f"volume_ratio_{self.volume_window}",
            f"volume_z_{self.volume_window}",
            f"beta_{self.beta_window}",
            f"corr_{self.beta_window}",
            f"rel_ret_{self.rel_ret_window}",
        ]
        fundamentals = ["pe_ratio", "earnings_yield", "log_market_cap", "dividend_yield"]
        sentiment = [
            *[f"sent_mean_{w}" for w in self.sent_windows],
            f"news_count_{self.news_count_window}",
            "has_news",
        ]
        calendar = ["day_of_week", "month"]
        groups = {
            "technical": technical,
            "market": market,
            "fundamentals": fundamentals,
            "sentiment": sentiment,
            "calendar": calendar,
        }
        if self.alpha158_windows:
            groups["alpha158"] = alpha158_columns(self.alpha158_windows)
        if self.social_windows:
            groups["social"] = [
                *[f"social_{kind}_{w}" for w in self.social_windows for kind in ("mean", "count", "bullish")],
                f"social_abnormal_{self.social_volume_window}",
            ]
        return groups

    def columns(self) -> list[str]:
        return [c for cols in self.groups().values() for c in cols]

    def model_columns(self) -> list[str]:
        """Scale-free features, the default inputs of the learners and of drift checks.

        Price-level columns (SMA/EMA/Bollinger levels, MACD and ATR in dollars) are left out: their
        scale differs by ticker and trends over time, so a model fitted on them extrapolates and a
        drift check flags them on every window. Ordered so a model that takes the first N (the
        LSTM's ``features``) gets returns, trend and volatility first.
        """
        g = self.groups()
        levels = {f"macd_{self.macd_tag}", f"macd_signal_{self.macd_tag}", f"macd_hist_{self.macd_tag}",
                  f"bb_upper_{self.bb_tag}", f"bb_middle_{self.bb_tag}", f"bb_lower_{self.bb_tag}",
                  f"atr_{self.atr_period}",
                  *(f"sma_{p}" for p in self.sma_periods), *(f"ema_{p}" for p in self.ema_periods)}
        technical = [c for c in g["technical"] if c not in levels]
        # Alpha158 columns are ratios to the close (scale-free) and come last, so the LSTM's first N
        # stay the same in both feature sets.
        return [*technical, *g["market"], *g["fundamentals"], *g["sentiment"], *g["calendar"],
                *g.get("alpha158", []), *g.get("social", [])]

    # --- lookback ------------------------------------------------------------------------
    def max_lookback(self) -> int:
        """Bars needed before a date so that every feature there equals a full-history build.

        Windowed features need their window (+1 bar for a return). Recursive smoothers (EMA with
        alpha = 2/(p+1); Wilder's RSI/ATR with alpha = 1/p) need their seed period plus enough bars
        for (1 - alpha)^n < seed_decay. Rounded up to a multiple of 100.
        """

        def decay(alpha: float) -> int:
            return math.ceil(math.log(self.seed_decay) / math.log(1.0 - alpha))

        def ema(p: int) -> int:
            return p + decay(2.0 / (p + 1))

        recursive = [
            *[ema(p) for p in self.ema_periods],
            ema(self.macd_slow) + ema(self.macd_signal),
            self.rsi_period + 1 + decay(1.0 / self.rsi_period),
            self.atr_period + 1 + decay(1.0 / self.atr_period),
        ]
        windows = [
            max(self.sma_periods),
            self.bb_period,
            max(self.return_horizons) + 1,
            self.obv_window + 1,
            max(self.vol_windows) + 1,
            self.volume_window,
            self.beta_window + 1,
            self.rel_ret_window + 1,
            max(self.sent_windows),
            self.news_count_window,
            alpha158_lookback(self.alpha158_windows) if self.alpha158_windows else 0,
            max(self.social_windows, default=0),
            self.social_volume_window + 1 if self.social_windows else 0,
        ]
        need = max(recursive + windows)
        return int(math.ceil(need / 100.0) * 100)

    def to_dict(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        # a spec without Alpha158 or normalization keeps the parameters (and so the version hash)
        # it had before they existed: existing stores stay current
        if not self.alpha158_windows:
            del out["alpha158_windows"]
        if self.cs_normalization == "none":
            del out["cs_normalization"]
        if not self.social_windows:
            del out["social_windows"], out["social_volume_window"]
        return out

    def version_hash(self) -> str:
        """sha256 over the ordered column list and the parameters: the feature-set version key."""
        payload = json.dumps({"columns": self.columns(), "params": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


DEFAULT_SPEC = FeatureSpec()
ALPHA158_SPEC = replace(DEFAULT_SPEC, alpha158_windows=(5, 10, 20, 30, 60))
# The feature sets a build knows by name (``build_features --feature-set``, ``training.feature_set``).
# ``<set>_cs``: the same features normalized per date across the universe (``features.normalize``).
FEATURE_SETS: dict[str, FeatureSpec] = {
    "default": DEFAULT_SPEC,
    "alpha158": ALPHA158_SPEC,
    "default_cs": replace(DEFAULT_SPEC, cs_normalization="robust_zscore"),
    "alpha158_cs": replace(ALPHA158_SPEC, cs_normalization="robust_zscore"),
    # the default features plus social-media sentiment (``social_*``; posts from ``ingest_social`` or
    # ML_SOCIAL_PROVIDER): the day's posts and the last week's
    "default_social": replace(DEFAULT_SPEC, social_windows=(1, 5)),
}
FEATURE_GROUPS: dict[str, list[str]] = DEFAULT_SPEC.groups()
FEATURE_COLUMNS: list[str] = DEFAULT_SPEC.columns()
MODEL_FEATURE_COLUMNS: list[str] = DEFAULT_SPEC.model_columns()
MAX_LOOKBACK: int = DEFAULT_SPEC.max_lookback()
