"""``ensemble``: a stack of the other learners, fitted on their OUT-OF-FOLD predictions only.

Never fit the stack on in-sample predictions (a member scored on its own training rows looks far
better than it is, and the stack would learn to trust the most overfitted member). Use:

1. ``evaluate_walk_forward`` for each member -> each ``EvaluationResult.oof`` holds predictions made
   by models that never saw those rows;
2. ``stack_oof({name: result.oof, ...}, labels=frame)`` -> one frame with a column per member
   (its ``expected_return``) plus the labels;
3. ``EnsembleLearner(members=[...]).fit(stacked, feature_columns=members, horizon=h)`` or, with
   arrays, ``fit_from_oof({name: array}, target)``. To evaluate the ensemble itself honestly, run
   ``evaluate_walk_forward`` on the stacked frame: each fold's weights then come from earlier OOF
   rows only.

Model: each member's prediction is standardized with its OOF mean/std (NaN -> 0, i.e. the member's
mean: "no opinion"). The stack learns the members' target, the day's CSRankNorm rank of the forward
return (``fwd_csrank_h``), so a calm day and a crash day weigh the same in the fit (fitted on the
excess return, the 2008-2009 days decided the weights for every later year). With ``fit`` on a
frame the members' standardized predictions are demeaned per date, so the weights are what ranks the
stocks of a day, not what the members say about the market. The target is regressed on them by
ridge regression (penalty ``ridge_alpha * n``) with non-negative weights by default (NNLS on the
ridge-augmented system: a member can be ignored but never bet against; the weights follow the
members' out-of-fold skill and their correlation). The blend ``z = x @ weights`` is in rank units;
``scale``, the regression of the excess return on ``z``, turns it into a return, and the intercept
is the mean ``fwd_ret_h`` (drift): ``expected_return = intercept + scale * z``.

Confidence: ``sigma`` is the standard deviation of the excess return around ``scale * z``; ``prob_up
= Phi(scale * z / sigma)``, the probability of beating the cross-section, ``confidence = |2 *
prob_up - 1|``.

Artifact: ``meta.json`` only (members, scalers, weights, scale, intercept, sigma).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from training.learners.base import (
    FitReport,
    NotFittedError,
    Predictions,
    check_frame,
    column_stats,
    cross_sectional_targets,
    filter_params,
    normal_cdf,
    pack_artifact,
    unpack_artifact,
)


def stack_oof(
    oof_frames: Mapping[str, pd.DataFrame],
    *,
    labels: pd.DataFrame | None = None,
    column: str = "expected_return",
    how: str = "inner",
) -> pd.DataFrame:
    """One row per (ticker, date) with a column per member holding its OOF ``column``.

    ``labels`` (e.g. the training frame) contributes its other columns (``adj_close``,
    ``fwd_ret_*``...) for the same rows, so the result can be fitted and evaluated directly.
    """
    if not oof_frames:
        raise ValueError("no member predictions to stack")
    out: pd.DataFrame | None = None
    for name, oof in oof_frames.items():
        part = oof[["ticker", "date", column]].rename(columns={column: name})
        part = part.assign(date=pd.to_datetime(part["date"]))
        out = part if out is None else out.merge(part, on=["ticker", "date"], how=how)
    assert out is not None
    if labels is not None:
        extra = [c for c in labels.columns if c not in out.columns or c in ("ticker", "date")]
        lab = labels[extra].assign(date=pd.to_datetime(labels["date"]))
        out = out.merge(lab, on=["ticker", "date"], how="left")
    return out.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)


class EnsembleLearner:
    name: ClassVar[str] = "ensemble"
    model_type: ClassVar[str] = "ensemble"
    context_days: ClassVar[int] = 0
    PARAMS: ClassVar[tuple[str, ...]] = ("members", "ridge_alpha", "non_negative", "seed")

    def __init__(
        self,
        *,
        members: list[str] | None = None,
        ridge_alpha: float = 0.1,
        non_negative: bool = True,
        seed: int = 42,
    ):
        self.params: dict[str, Any] = {
            "members": list(members) if members else None,
            "ridge_alpha": float(ridge_alpha),
            "non_negative": bool(non_negative),
            "seed": int(seed),
        }
        self.horizon: int | None = None
        self.members: list[str] | None = None
        self.means: np.ndarray | None = None
        self.stds: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.scale: float = 1.0
        self.intercept: float = 0.0
        self.sigma: float = 1.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EnsembleLearner:
        return cls(**filter_params(config, cls.PARAMS))

    # ----------------------------------------------------------------------------------------------

    def _design(self, member_predictions: Mapping[str, Any]) -> np.ndarray:
        assert self.members is not None and self.means is not None and self.stds is not None
        missing = [m for m in self.members if m not in member_predictions]
        if missing:
            raise KeyError(f"missing member predictions: {missing}")
        x = np.column_stack([np.asarray(member_predictions[m], dtype=np.float64) for m in self.members])
        x = (x - self.means) / self.stds
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def fit_from_oof(
        self, oof_predictions: Mapping[str, Any], target: Any, *, horizon: int | None = None,
        dates: Any = None, drift: float | None = None, returns: Any = None,
    ) -> FitReport:
        """Learn the stack from members' out-of-fold predictions.

        ``target`` is what the weights are fitted to (the CSRankNorm rank in ``fit``); ``returns``
        (default: ``target``) the realized (excess) return that sets ``scale`` and ``sigma``. With
        ``dates`` the design is demeaned per date (a cross-sectional fit); ``drift`` is the
        intercept (default: the mean of ``returns``)."""
        started = time.perf_counter()
        members = self.params["members"] or sorted(oof_predictions)
        missing = [m for m in members if m not in oof_predictions]
        if missing:
            raise KeyError(f"missing member predictions: {missing}")
        y = np.asarray(target, dtype=np.float64).reshape(-1)
        r = y if returns is None else np.asarray(returns, dtype=np.float64).reshape(-1)
        raw = np.column_stack([np.asarray(oof_predictions[m], dtype=np.float64) for m in members])
        if len(raw) != len(y) or len(r) != len(y):
            raise ValueError("member predictions, target and returns differ in length")
        keep = np.isfinite(y) & np.isfinite(r)
        raw, y, r = raw[keep], y[keep], r[keep]
        if len(y) < 2:
            raise ValueError("need at least two labelled out-of-fold rows")
        self.members = list(members)
        self.means, self.stds = column_stats(raw)
        x = self._design(dict(zip(members, raw.T, strict=True)))
        self.intercept = float(np.mean(r)) if drift is None else float(drift)
        yc, rc = y - float(np.mean(y)), r - float(np.mean(r))
        if dates is not None:
            keys = np.asarray(dates).reshape(-1)[keep]
            x = x - pd.DataFrame(x).groupby(keys).transform("mean").to_numpy()
        n, k = x.shape
        lam = self.params["ridge_alpha"] * n
        a = np.vstack([x, np.sqrt(lam) * np.eye(k)])
        b = np.concatenate([yc, np.zeros(k)])
        if self.params["non_negative"]:
            w, _ = nnls(a, b)
        else:
            w = np.linalg.lstsq(a, b, rcond=None)[0]
        self.weights = w
        z = x @ w
        zz = float(z @ z)
        # a blend that does not rise with the return keeps its ranking at a vanishing scale
        self.scale = max(float(z @ rc) / zz, 1e-12) if zz > 0 else 1e-12
        resid = rc - self.scale * z
        self.sigma = float(np.std(resid)) or float(np.std(r)) or 1.0
        self.horizon = horizon
        total = float(np.sum(np.abs(w)))
        return FitReport(
            n_samples=int(n),
            seconds=time.perf_counter() - started,
            extra={
                "weights": dict(zip(members, w.tolist(), strict=True)),
                "weight_shares": dict(
                    zip(members, (np.abs(w) / total if total else w).tolist(), strict=True)
                ),
                "scale": self.scale,
                "sigma": self.sigma,
            },
        )

    def predict_members(self, member_predictions: Mapping[str, Any]) -> Predictions:
        """Combine members' predictions (same rows, same order) made for the rows to score."""
        if self.weights is None:
            raise NotFittedError("ensemble is not fitted")
        edge = self.scale * (self._design(member_predictions) @ self.weights)
        return Predictions.from_prob(self.intercept + edge, normal_cdf(edge / self.sigma))

    def fit(self, frame: pd.DataFrame, *, feature_columns: list[str], horizon: int) -> FitReport:
        """``frame`` holds one OOF prediction column per member (``feature_columns``) and the labels."""
        ret_col = f"fwd_ret_{int(horizon)}"
        if self.params["members"]:
            feature_columns = self.params["members"]
        check_frame(frame, [*feature_columns, ret_col])
        oof = {m: frame[m].to_numpy(dtype=np.float64) for m in feature_columns}
        self.params["members"] = list(feature_columns)
        targets = cross_sectional_targets(frame, int(horizon))
        return self.fit_from_oof(oof, targets.rank, returns=targets.excess, horizon=horizon,
                                 dates=pd.to_datetime(frame["date"]).to_numpy(), drift=float(np.nanmean(targets.ret)))

    def predict(self, frame: pd.DataFrame) -> Predictions:
        if self.members is None:
            raise NotFittedError("ensemble is not fitted")
        check_frame(frame, self.members)
        return self.predict_members({m: frame[m].to_numpy(dtype=np.float64) for m in self.members})

    # ----------------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        if self.weights is None:
            raise NotFittedError("ensemble is not fitted")
        meta = {
            "params": self.params,
            "horizon": self.horizon,
            "members": self.members,
            "means": self.means,
            "stds": self.stds,
            "weights": self.weights,
            "scale": self.scale,
            "intercept": self.intercept,
            "sigma": self.sigma,
        }
        return pack_artifact(self.name, meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> EnsembleLearner:
        meta, _ = unpack_artifact(data, expected_learner=cls.name)
        learner = cls(**meta["params"])
        learner.horizon = meta["horizon"]
        learner.members = list(meta["members"])
        learner.means = np.asarray(meta["means"], dtype=np.float64)
        learner.stds = np.asarray(meta["stds"], dtype=np.float64)
        learner.weights = np.asarray(meta["weights"], dtype=np.float64)
        learner.scale = float(meta.get("scale", 1.0))  # stacks fitted on returns had no scale
        learner.intercept = float(meta["intercept"])
        learner.sigma = float(meta["sigma"])
        return learner
