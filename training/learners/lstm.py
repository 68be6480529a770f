"""``lstm_predictor``: an LSTM over each ticker's last ``sequence_length`` days of features.

Inputs: the first ``features`` of the given feature columns, standardized with the statistics of
the rows the network is fitted on (NaN -> 0 after scaling, i.e. the mean; values clipped to +-10
standard deviations). A row's sequence is its ticker's last ``sequence_length`` rows ending at the
row itself, left-padded with zeros when the ticker has less history; sequences never cross tickers
(every ticker gets its own zero padding in one flat array, windows are strided views of it).

Target: cross-sectional, the day's rank of ``fwd_ret_{h}`` (Qlib's ``CSRankNorm``, about unit
variance; ``training.learners.base.cross_sectional_targets``): which stocks beat the others, not
the market's direction. The output is mapped back to a return, ``expected_return = drift + spread *
output``, with ``drift`` the mean ``fwd_ret_h`` and ``spread`` the standard deviation of the excess
return over the day's mean on the fitted rows, so ``price = adj_close * (1 + expected_return)``.

Validation and early stopping: the last ``validation_fraction`` of the training dates, after a
purge of ``h`` dates (a label at ``d`` looks ``h`` days ahead), is held out; training stops after
``patience`` epochs without a better validation loss and the best epoch's weights are kept.

Confidence: ``sigma`` is the standard deviation of the validation residuals (realized minus
predicted excess return; training residuals when there was no validation window). Assuming
Gaussian errors, ``prob_up = Phi((expected_return - drift) / sigma)``, the probability of beating
the cross-section, and ``confidence = |2 * prob_up - 1|``: the forecast's edge relative to the
model's own typical error, 0 when it is well inside the noise.

Warm start (``warm_start_from``): the daily refit fine-tunes the active network on the newest
window for a few epochs instead of fitting from scratch, keeping the starting weights when
fine-tuning does not lower the validation loss.

Performance settings (spec "Performance Tuning"): ``batch_size``; ``use_amp`` (autocast: bfloat16 on
a CPU with bf16 kernels, float32 on one without, float16 with a GradScaler on CUDA; inference stays
float32); ``gradient_checkpointing``
(recompute the LSTM's activations in the backward pass); a smaller ``hidden_size`` or
``sequence_length``. Runs on CUDA when available unless ``device`` is given. Seeded: two fits with
the same seed and data give identical predictions on CPU.

Artifact: ``meta.json`` (params, feature columns, scaler, target scaling, sigma) and one ``.npy``
per state-dict tensor (``allow_pickle=False``); nothing is read back through a pickle-based loader.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.learners.base import (
    FitReport,
    NotFittedError,
    Predictions,
    array_from_bytes,
    array_to_bytes,
    check_frame,
    column_stats,
    cross_sectional_targets,
    filter_params,
    normal_cdf,
    pack_artifact,
    split_validation_dates,
    ticker_date_order,
    unpack_artifact,
)

_CLIP = 10.0
_TARGET_WINSOR = 5.0


class _LSTMNet(nn.Module):
    def __init__(self, n_inputs: int, hidden_size: int, num_layers: int, dropout: float, checkpointing: bool):
        super().__init__()
        self.lstm = nn.LSTM(
            n_inputs,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, 1)
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            out, _ = checkpoint(self.lstm, x, use_reentrant=False)
        else:
            out, _ = self.lstm(x)
        return self.head(self.drop(out[:, -1, :])).squeeze(-1)


class _Windows:
    """Per-row sequences of a (ticker, date)-sorted feature matrix, without materializing them.

    Each ticker's block is preceded by ``L - 1`` zero rows in one flat array; the window for a row
    is a strided view ending at the row, so it can only ever see its own ticker's earlier rows.
    """

    def __init__(self, x_sorted: np.ndarray, ticker_codes: np.ndarray, length: int):
        n, f = x_sorted.shape
        pad = length - 1
        n_tickers = int(ticker_codes.max()) + 1 if n else 0
        self.positions = np.arange(n) + pad * (ticker_codes + 1)
        flat = np.zeros((n + pad * n_tickers, f), dtype=np.float32)
        flat[self.positions] = x_sorted
        self._flat = flat
        # shape (rows - L + 1, F, L): window k covers flat[k : k + L]
        self._view = np.lib.stride_tricks.sliding_window_view(flat, length, axis=0)
        self.length = length

    def batch(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), L, F) float32 for sorted-row indices ``rows``."""
        return np.ascontiguousarray(self._view[self.positions[rows] - (self.length - 1)].transpose(0, 2, 1))


class LSTMLearner:
    name: ClassVar[str] = "lstm_predictor"
    model_type: ClassVar[str] = "neural_network"
    PARAMS: ClassVar[tuple[str, ...]] = (
        "features",
        "sequence_length",
        "hidden_size",
        "num_layers",
        "dropout",
        "batch_size",
        "epochs",
        "learning_rate",
        "patience",
        "use_amp",
        "gradient_checkpointing",
        "seed",
        "validation_fraction",
        "weight_decay",
        "device",
    )

    def __init__(
        self,
        *,
        features: int = 20,
        sequence_length: int = 60,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        batch_size: int = 256,
        epochs: int = 20,
        learning_rate: float = 1e-3,
        patience: int = 3,
        use_amp: bool = False,
        gradient_checkpointing: bool = False,
        seed: int = 42,
        validation_fraction: float = 0.2,
        weight_decay: float = 0.0,
        device: str | None = None,
    ):
        if sequence_length < 1 or features < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("features, sequence_length, hidden_size and num_layers must be >= 1")
        self.params: dict[str, Any] = {
            "features": int(features),
            "sequence_length": int(sequence_length),
            "hidden_size": int(hidden_size),
            "num_layers": int(num_layers),
            "dropout": float(dropout),
            "batch_size": int(batch_size),
            "epochs": int(epochs),
            "learning_rate": float(learning_rate),
            "patience": int(patience),
            "use_amp": bool(use_amp),
            "gradient_checkpointing": bool(gradient_checkpointing),
            "seed": int(seed),
            "validation_fraction": float(validation_fraction),
            "weight_decay": float(weight_decay),
        }
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.feature_columns: list[str] | None = None
        self.horizon: int | None = None
        self._net: _LSTMNet | None = None
        self._runner: Callable[[np.ndarray], np.ndarray] | None = None  # serving only (use_runner)
        self._state: dict[str, Any] = {}
        self._warm: dict[str, Any] | None = None  # warm_start_from: what the next fit starts from

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LSTMLearner:
        return cls(**filter_params(config, cls.PARAMS))

    @property
    def context_days(self) -> int:
        return self.params["sequence_length"] - 1

    # ----------------------------------------------------------------------------------------------

    def warm_start_from(self, previous: LSTMLearner, *, epochs: int) -> None:
        """Start the next ``fit`` from ``previous``'s weights and input scaling, for at most ``epochs``
        epochs, keeping whichever of the starting and the fine-tuned weights has the lower
        validation loss.

        The daily refit's shortcut: yesterday's network already fits all but the newest day, and
        a cold fit runs at least ``1 + patience`` epochs. The input scaling stays ``previous``'s so
        its weights keep their meaning. ``previous`` must have the same architecture and feature
        columns (``fit`` checks the columns)."""
        arch = ("features", "sequence_length", "hidden_size", "num_layers")
        if previous._net is None or previous.feature_columns is None:
            raise NotFittedError("warm start from an unfitted lstm_predictor")
        if any(previous.params[k] != self.params[k] for k in arch):
            raise ValueError(f"warm start needs the same {', '.join(arch)}")
        if epochs < 1:
            raise ValueError("warm start needs at least one epoch")
        self._warm = {
            "weights": copy.deepcopy(previous._net.state_dict()),
            "columns": list(previous.feature_columns),
            "mean": previous._state["mean"], "std": previous._state["std"],
            "epochs": int(epochs),
        }

    def _new_net(self, n_inputs: int) -> _LSTMNet:
        p = self.params
        return _LSTMNet(
            n_inputs, p["hidden_size"], p["num_layers"], p["dropout"], p["gradient_checkpointing"]
        )

    def _prepare(self, frame: pd.DataFrame) -> tuple[np.ndarray, _Windows]:
        """Sorted order and the windows over the scaled features of ``frame``."""
        assert self.feature_columns is not None
        order = ticker_date_order(frame)
        x = frame[self.feature_columns].to_numpy(dtype=np.float64)[order]
        with np.errstate(over="ignore"):  # a huge finite input scales past float64: clipped below
            x = (x - self._state["mean"]) / self._state["std"]
        x = np.clip(np.nan_to_num(x, nan=0.0, posinf=_CLIP, neginf=-_CLIP), -_CLIP, _CLIP)
        codes = pd.factorize(frame["ticker"].to_numpy()[order])[0]
        return order, _Windows(x.astype(np.float32), codes, self.params["sequence_length"])

    def use_runner(self, runner: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """Serve through ``runner`` (float32 windows (n, L, F) -> (n,) outputs, e.g. ONNX Runtime)
        instead of the torch network; None goes back to torch. Training never uses it."""
        self._runner = runner

    def _forward(self, windows: _Windows, rows: np.ndarray) -> np.ndarray:
        """Standardized outputs for sorted rows, float32 inference in eval mode."""
        assert self._net is not None
        out = np.empty(len(rows), dtype=np.float64)
        step = max(self.params["batch_size"], 1024)
        if self._runner is not None:
            for start in range(0, len(rows), step):
                out[start : start + step] = self._runner(windows.batch(rows[start : start + step]))
            return out
        self._net.eval()
        with torch.no_grad():
            for start in range(0, len(rows), step):
                xb = torch.from_numpy(windows.batch(rows[start : start + step])).to(self.device)
                out[start : start + step] = self._net(xb).float().cpu().numpy()
        return out

    def fit(self, frame: pd.DataFrame, *, feature_columns: list[str], horizon: int) -> FitReport:
        started = time.perf_counter()
        p = self.params
        ret_col = f"fwd_ret_{int(horizon)}"
        cols = list(feature_columns)[: p["features"]]
        if not cols:
            raise ValueError("lstm_predictor needs at least one feature column")
        check_frame(frame, [*cols, ret_col])
        warm = self._warm
        if warm is not None and warm["columns"] != cols:
            raise ValueError("warm start needs the same feature columns as the previous fit")
        self.feature_columns, self.horizon = cols, int(horizon)

        torch.manual_seed(p["seed"])
        rng = np.random.default_rng(p["seed"])

        dates = pd.to_datetime(frame["date"]).to_numpy()
        fit_dates, val_dates = split_validation_dates(
            np.unique(dates), fraction=p["validation_fraction"], gap=horizon, min_fit_dates=2
        )
        targets = cross_sectional_targets(frame, int(horizon))
        y_all = targets.rank
        labelled = np.isfinite(y_all)
        in_fit = np.isin(dates, fit_dates) & labelled
        in_val = np.isin(dates, val_dates) & labelled
        if not in_fit.any():
            raise ValueError("no labelled training rows")

        if warm is not None:
            mean, std = warm["mean"], warm["std"]
        else:
            mean, std = column_stats(frame[cols].to_numpy(dtype=np.float64)[in_fit])
        y_mean = float(np.mean(targets.ret[in_fit]))
        y_std = float(np.nanstd(targets.excess[in_fit])) or 1.0
        self._state = {"mean": mean, "std": std, "y_mean": y_mean, "y_std": y_std, "sigma": None}

        order, windows = self._prepare(frame)
        y_sorted = np.clip(y_all[order], -_TARGET_WINSOR, _TARGET_WINSOR)
        fit_rows = np.flatnonzero(in_fit[order])
        val_rows = np.flatnonzero(in_val[order])

        net = self._new_net(len(cols))
        if warm is not None:
            net.load_state_dict(warm["weights"])
        net = net.to(self.device)
        self._net = net
        opt = torch.optim.Adam(net.parameters(), lr=p["learning_rate"], weight_decay=p["weight_decay"])
        cuda = self.device.type == "cuda"
        # bfloat16 autocast on the CPU needs oneDNN's bf16 kernels (AVX-512 BF16/AMX); without them its
        # LSTM primitive fails to build, so such CPUs train in float32 (reported as amp "off")
        amp = p["use_amp"] and (cuda or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
        amp_dtype = torch.float16 if cuda else torch.bfloat16
        scaler = torch.amp.GradScaler("cuda", enabled=amp and cuda)
        loss_fn = nn.MSELoss()

        def val_loss() -> float:
            pred = self._forward(windows, val_rows)
            return float(np.mean((pred - y_sorted[val_rows]) ** 2))

        best_loss, best_epoch, best_state, stale = np.inf, 0, None, 0
        if warm is not None and len(val_rows):  # the starting weights are a candidate too (epoch 0)
            best_loss, best_state = val_loss(), copy.deepcopy(net.state_dict())
        history: list[float] = []
        epochs_run = 0
        for epoch in range(1, (warm["epochs"] if warm is not None else p["epochs"]) + 1):
            epochs_run = epoch
            net.train()
            perm = fit_rows[rng.permutation(len(fit_rows))]
            total, count = 0.0, 0
            for start in range(0, len(perm), p["batch_size"]):
                rows = perm[start : start + p["batch_size"]]
                xb = torch.from_numpy(windows.batch(rows)).to(self.device)
                yb = torch.from_numpy(y_sorted[rows].astype(np.float32)).to(self.device)
                with torch.autocast(device_type=self.device.type, dtype=amp_dtype, enabled=amp):
                    out = net(xb)
                loss = loss_fn(out.float(), yb)
                opt.zero_grad(set_to_none=True)
                if scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                total += float(loss.detach()) * len(rows)
                count += len(rows)
            if len(val_rows):
                current = val_loss()
            else:
                current = total / max(count, 1)
            history.append(current)
            if current < best_loss - 1e-12:
                best_loss, best_epoch, stale = current, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                stale += 1
                if stale >= p["patience"]:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        self._warm = None

        resid_rows = val_rows if len(val_rows) else fit_rows
        resid = targets.excess[order][resid_rows] - y_std * self._forward(windows, resid_rows)
        sigma = float(np.std(resid)) if len(resid) > 1 else float(y_std)
        self._state["sigma"] = sigma if sigma > 0 else float(y_std)

        return FitReport(
            n_samples=int(len(fit_rows)),
            seconds=time.perf_counter() - started,
            extra={
                "best_epoch": best_epoch,
                "epochs_run": epochs_run,
                "val_loss": None if not len(val_rows) else float(best_loss),
                "val_loss_history": history,
                "n_validation": int(len(val_rows)),
                "sigma": self._state["sigma"],
                "device": self.device.type,
                "amp": ("float16" if cuda else "bfloat16") if amp else "off",
                "feature_columns": cols,
                "warm_start": warm is not None,
            },
        )

    def predict(self, frame: pd.DataFrame) -> Predictions:
        if self._net is None or self.feature_columns is None:
            raise NotFittedError("lstm_predictor is not fitted")
        check_frame(frame, self.feature_columns)
        n = len(frame)
        if n == 0:
            return Predictions(np.empty(0), np.empty(0), np.empty(0))
        order, windows = self._prepare(frame)
        out = np.empty(n)
        out[order] = self._forward(windows, np.arange(n))
        return self._predictions(out)

    def predict_at(self, frame: pd.DataFrame, positions: np.ndarray) -> Predictions:
        """``predict`` for the rows at ``positions`` of ``frame`` only; the other rows are read as
        the windows' history (serving: one row per ticker through the network, not all)."""
        if self._net is None or self.feature_columns is None:
            raise NotFittedError("lstm_predictor is not fitted")
        check_frame(frame, self.feature_columns)
        order, windows = self._prepare(frame)
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[order] = np.arange(len(order))
        return self._predictions(self._forward(windows, inverse[np.asarray(positions, dtype=np.int64)]))

    def _predictions(self, out: np.ndarray) -> Predictions:
        """Network outputs (rank units) -> returns, P(beating the cross-section), confidence."""
        expected = self._state["y_mean"] + self._state["y_std"] * out
        prob = normal_cdf((expected - self._state["y_mean"]) / self._state["sigma"])
        return Predictions.from_prob(expected, prob)

    # ----------------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        if self._net is None:
            raise NotFittedError("lstm_predictor is not fitted")
        state = {k: v.detach().float().cpu().numpy() for k, v in self._net.state_dict().items()}
        meta = {
            "params": self.params,
            "feature_columns": self.feature_columns,
            "horizon": self.horizon,
            "scaler": {"mean": self._state["mean"], "std": self._state["std"]},
            "target": {"mean": self._state["y_mean"], "std": self._state["y_std"]},
            "sigma": self._state["sigma"],
            "tensors": sorted(state),
        }
        files = {f"tensors/{k}.npy": array_to_bytes(v) for k, v in state.items()}
        return pack_artifact(self.name, meta, files)

    @classmethod
    def from_bytes(cls, data: bytes, *, device: str | None = None) -> LSTMLearner:
        meta, files = unpack_artifact(data, expected_learner=cls.name)
        learner = cls(**meta["params"], device=device)
        learner.feature_columns = list(meta["feature_columns"])
        learner.horizon = meta["horizon"]
        learner._state = {
            "mean": np.asarray(meta["scaler"]["mean"], dtype=np.float64),
            "std": np.asarray(meta["scaler"]["std"], dtype=np.float64),
            "y_mean": float(meta["target"]["mean"]),
            "y_std": float(meta["target"]["std"]),
            "sigma": float(meta["sigma"]),
        }
        net = learner._new_net(len(learner.feature_columns))
        state = {k: torch.from_numpy(array_from_bytes(files[f"tensors/{k}.npy"])) for k in meta["tensors"]}
        net.load_state_dict(state, strict=True)
        learner._net = net.to(learner.device)
        return learner
