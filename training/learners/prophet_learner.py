"""``prophet_forecaster``: one Prophet model per ticker on the log of the adjusted close.

Trading-day time axis: each ticker's last ``history_days`` trading days are numbered 0..n-1 and fed
to Prophet as consecutive calendar days (``EPOCH + index``), so weekends and holidays leave no gaps
and "h trading days ahead" is simply ``index + h``. For a row dated ``t`` the index is the last
fitted index plus the business days (``numpy.busday_count``) from the last fitted date to ``t``.
Weekly/daily/yearly seasonality is off (a trading-day index has no calendar week); an optional
``yearly_seasonality`` adds a 252-trading-day seasonality.

Forecast for a row (ticker, t, adj_close c_t): ``mu = yhat(t + h) - log(c_t)``,
``expected_return = exp(mu) - 1``. Only the features of the row itself are used; the model must
have been fitted on data up to ``t`` at most (walk-forward evaluation refits every fold).

Confidence: Prophet's ``interval_width`` interval at ``t + h`` gives a standard deviation on the
log scale, ``sd = (upper - lower) / (2 * z)`` with ``z = Phi^-1((1 + interval_width) / 2)``;
``prob_up = Phi(mu / sd)``, ``confidence = |2 * prob_up - 1|``: a narrower interval (or a larger
expected move) means more confidence. The interval is Prophet's simulated one
(``uncertainty_samples`` draws) with the global NumPy RNG seeded per ticker from ``seed`` (and
restored afterwards), so predictions are reproducible and do not depend on how tickers were chunked.

Fan-out: ``fit_tickers(frame, tickers, horizon=h)`` fits a subset (a Celery chunk) and
``merge(others)`` joins chunk learners into one. ``fit(..., warm_start=previous)`` initializes each
ticker's optimization at the previous model's parameters (Prophet's ``warm_start_params`` recipe).
Tickers with fewer than ``min_history_days`` valid closes get no model; their predictions are NaN.

Artifact: ``meta.json`` (params, horizon, per-ticker anchors) and ``models/<i>.json`` written by
``prophet.serialize.model_to_json``.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import ndtri

from training.learners.base import (
    FitReport,
    NotFittedError,
    Predictions,
    check_frame,
    filter_params,
    normal_cdf,
    pack_artifact,
    unpack_artifact,
)

if TYPE_CHECKING:
    from prophet import Prophet

EPOCH = pd.Timestamp("2000-01-01")
TRADING_YEAR = 252


def _prophet_modules() -> tuple[Any, Any, Any]:
    """Import Prophet lazily (slow import), with its plotting and Stan chatter silenced."""
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    import cmdstanpy
    from prophet import Prophet, serialize

    return Prophet, serialize, cmdstanpy


def stan_init(model: Prophet) -> dict[str, Any]:
    """Fitted parameters of ``model`` as initial values for a new fit (Prophet docs' recipe)."""
    res: dict[str, Any] = {}
    for pname in ("k", "m", "sigma_obs"):
        value = model.params[pname]
        res[pname] = float(value[0][0]) if model.mcmc_samples == 0 else float(np.mean(value))
    for pname in ("delta", "beta"):
        value = model.params[pname]
        res[pname] = np.asarray(value[0]) if model.mcmc_samples == 0 else np.mean(value, axis=0)
    return res


def _ticker_seed(seed: int, ticker: str) -> int:
    return (int(seed) + zlib.crc32(str(ticker).encode("utf-8"))) % (2**32)


class ProphetLearner:
    name: ClassVar[str] = "prophet_forecaster"
    model_type: ClassVar[str] = "time_series"
    context_days: ClassVar[int] = 0
    PARAMS: ClassVar[tuple[str, ...]] = (
        "interval_width",
        "changepoint_prior_scale",
        "history_days",
        "seed",
        "uncertainty_samples",
        "yearly_seasonality",
        "min_history_days",
    )

    def __init__(
        self,
        *,
        interval_width: float = 0.8,
        changepoint_prior_scale: float = 0.05,
        history_days: int = 750,
        seed: int = 42,
        uncertainty_samples: int = 200,
        yearly_seasonality: bool = False,
        min_history_days: int = 30,
    ):
        if not 0 < interval_width < 1:
            raise ValueError("interval_width must be in (0, 1)")
        self.params: dict[str, Any] = {
            "interval_width": float(interval_width),
            "changepoint_prior_scale": float(changepoint_prior_scale),
            "history_days": int(history_days),
            "seed": int(seed),
            "uncertainty_samples": int(uncertainty_samples),
            "yearly_seasonality": bool(yearly_seasonality),
            "min_history_days": max(int(min_history_days), 3),
        }
        self.horizon: int | None = None
        self.models: dict[str, Prophet] = {}
        # ticker -> {"last_date": ISO date, "last_index": int}
        self.anchors: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ProphetLearner:
        return cls(**filter_params(config, cls.PARAMS))

    @property
    def tickers(self) -> list[str]:
        return sorted(self.models)

    # ----------------------------------------------------------------------------------------------

    def _new_model(self) -> Prophet:
        Prophet, _, _ = _prophet_modules()
        p = self.params
        model = Prophet(
            growth="linear",
            changepoint_prior_scale=p["changepoint_prior_scale"],
            interval_width=p["interval_width"],
            yearly_seasonality=False,
            weekly_seasonality=False,
            daily_seasonality=False,
            uncertainty_samples=p["uncertainty_samples"],
        )
        if p["yearly_seasonality"]:
            model.add_seasonality(name="trading_year", period=TRADING_YEAR, fourier_order=5)
        return model

    def fit(
        self,
        frame: pd.DataFrame,
        *,
        feature_columns: list[str] | None = None,
        horizon: int,
        warm_start: ProphetLearner | None = None,
    ) -> FitReport:
        """Fit every ticker in ``frame`` (feature columns are not used: Prophet reads ``adj_close``)."""
        self.models, self.anchors = {}, {}
        return self.fit_tickers(frame, None, horizon=horizon, warm_start=warm_start)

    def fit_tickers(
        self,
        frame: pd.DataFrame,
        tickers: Iterable[str] | None,
        *,
        horizon: int,
        warm_start: ProphetLearner | None = None,
    ) -> FitReport:
        """Fit (or refit) the models of ``tickers`` (all of ``frame``'s when None) into this learner."""
        started = time.perf_counter()
        check_frame(frame, ["adj_close"])
        if self.horizon is not None and self.horizon != horizon:
            raise ValueError(f"learner was fitted for horizon {self.horizon}, not {horizon}")
        self.horizon = int(horizon)
        _, _, cmdstanpy = _prophet_modules()
        wanted = None if tickers is None else {str(t) for t in tickers}
        data = frame[["ticker", "date", "adj_close"]].copy()
        data["date"] = pd.to_datetime(data["date"])
        data = data[np.isfinite(data["adj_close"]) & (data["adj_close"] > 0)]
        if wanted is not None:
            data = data[data["ticker"].astype(str).isin(wanted)]
        fitted, skipped, warm, n_samples = [], [], 0, 0
        with cmdstanpy.disable_logging():
            for ticker, rows in data.sort_values(["ticker", "date"], kind="stable").groupby(
                "ticker", sort=True
            ):
                rows = rows.drop_duplicates("date", keep="last").tail(self.params["history_days"])
                if len(rows) < self.params["min_history_days"]:
                    skipped.append(str(ticker))
                    continue
                n = len(rows)
                history = pd.DataFrame(
                    {
                        "ds": EPOCH + pd.to_timedelta(np.arange(n), unit="D"),
                        "y": np.log(rows["adj_close"].to_numpy(dtype=np.float64)),
                    }
                )
                model = self._new_model()
                kwargs: dict[str, Any] = {"seed": self.params["seed"]}
                previous = warm_start.models.get(str(ticker)) if warm_start is not None else None
                if previous is not None:
                    kwargs["init"] = stan_init(previous)
                    warm += 1
                model.fit(history, **kwargs)
                self.models[str(ticker)] = model
                self.anchors[str(ticker)] = {
                    "last_date": rows["date"].iloc[-1].date().isoformat(),
                    "last_index": n - 1,
                    "first_date": rows["date"].iloc[0].date().isoformat(),
                }
                fitted.append(str(ticker))
                n_samples += n
        return FitReport(
            n_samples=n_samples,
            seconds=time.perf_counter() - started,
            extra={"tickers_fitted": len(fitted), "tickers_skipped": skipped, "warm_started": warm},
        )

    def merge(self, others: Iterable[ProphetLearner]) -> ProphetLearner:
        """A new learner holding this one's models and those of ``others`` (disjoint tickers)."""
        merged = ProphetLearner(**self.params)
        merged.horizon = self.horizon
        for part in [self, *others]:
            if part.params != self.params:
                raise ValueError("cannot merge prophet learners with different params")
            if part.horizon is not None:
                if merged.horizon is not None and part.horizon != merged.horizon:
                    raise ValueError(f"cannot merge horizons {merged.horizon} and {part.horizon}")
                merged.horizon = part.horizon
            overlap = set(merged.models) & set(part.models)
            if overlap:
                raise ValueError(f"tickers fitted in more than one part: {sorted(overlap)[:5]}")
            merged.models.update(part.models)
            merged.anchors.update(part.anchors)
        return merged

    # ----------------------------------------------------------------------------------------------

    def predict(self, frame: pd.DataFrame) -> Predictions:
        if self.horizon is None:
            raise NotFittedError("prophet_forecaster is not fitted")
        check_frame(frame, ["adj_close"])
        n = len(frame)
        expected = np.full(n, np.nan)
        prob = np.full(n, np.nan)
        if n == 0:
            return Predictions(expected, prob, prob.copy())
        tickers = frame["ticker"].astype(str).to_numpy()
        dates = pd.to_datetime(frame["date"]).to_numpy().astype("datetime64[D]")
        close = frame["adj_close"].to_numpy(dtype=np.float64)
        valid = np.flatnonzero(np.isfinite(close) & (close > 0))
        codes, uniques = pd.factorize(tickers[valid])
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(uniques)))])
        for code, ticker in enumerate(uniques):
            model = self.models.get(ticker)
            if model is None:
                continue
            rows = valid[order[bounds[code] : bounds[code + 1]]]
            anchor = self.anchors[ticker]
            last = np.datetime64(anchor["last_date"], "D")
            index = anchor["last_index"] + np.busday_count(last, dates[rows]) + self.horizon
            targets = np.unique(index)
            forecast = self._forecast(model, ticker, targets)
            pos = np.searchsorted(targets, index)
            yhat = forecast["yhat"][pos]
            mu = yhat - np.log(close[rows])
            sd = forecast["sd"][pos]
            expected[rows] = np.expm1(mu)
            with np.errstate(divide="ignore", invalid="ignore"):
                zscore = np.where(sd > 0, mu / sd, np.where(mu == 0, 0.0, np.sign(mu) * np.inf))
            prob[rows] = normal_cdf(zscore)
        confidence = np.abs(2.0 * prob - 1.0)
        return Predictions(expected, prob, confidence)

    def _forecast(self, model: Prophet, ticker: str, index: np.ndarray) -> dict[str, np.ndarray]:
        future = pd.DataFrame({"ds": EPOCH + pd.to_timedelta(index, unit="D")})
        state = np.random.get_state()
        try:
            np.random.seed(_ticker_seed(self.params["seed"], ticker))
            out = model.predict(future)
        finally:
            np.random.set_state(state)
        yhat = out["yhat"].to_numpy(dtype=np.float64)
        if "yhat_upper" in out and self.params["uncertainty_samples"] > 0:
            z = float(ndtri(0.5 + self.params["interval_width"] / 2.0))
            sd = (
                out["yhat_upper"].to_numpy(dtype=np.float64) - out["yhat_lower"].to_numpy(dtype=np.float64)
            ) / (2 * z)
        else:  # no simulated interval: observation noise only, on the log scale
            sd = np.full(
                len(yhat), float(np.asarray(model.params["sigma_obs"]).reshape(-1)[0]) * float(model.y_scale)
            )
        return {"yhat": yhat, "sd": sd}

    # ----------------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        if self.horizon is None:
            raise NotFittedError("prophet_forecaster is not fitted")
        _, serialize, _ = _prophet_modules()
        tickers = self.tickers
        files = {
            f"models/{i}.json": serialize.model_to_json(self.models[t]).encode("utf-8")
            for i, t in enumerate(tickers)
        }
        meta = {
            "params": self.params,
            "horizon": self.horizon,
            "tickers": tickers,
            "anchors": {t: self.anchors[t] for t in tickers},
        }
        return pack_artifact(self.name, meta, files)

    @classmethod
    def from_bytes(cls, data: bytes) -> ProphetLearner:
        meta, files = unpack_artifact(data, expected_learner=cls.name)
        _, serialize, _ = _prophet_modules()
        learner = cls(**meta["params"])
        learner.horizon = meta["horizon"]
        for i, ticker in enumerate(meta["tickers"]):
            learner.models[ticker] = serialize.model_from_json(files[f"models/{i}.json"].decode("utf-8"))
            learner.anchors[ticker] = dict(meta["anchors"][ticker])
        return learner
