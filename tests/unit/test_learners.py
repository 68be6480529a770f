"""Learners: no out-of-sample skill on pure noise (leakage), skill on a planted signal, safe and
tamper-evident artifacts, determinism, per-ticker sequences and Prophet's fan-out/merge.

Standard error used for the leakage thresholds: with returns independent of everything known at
``t`` (iid across dates and tickers) and ``h = 1`` (no overlapping labels), each date's
cross-sectional IC has mean 0 and variance ~1/(n_tickers - 1), independently across dates, so the
mean IC over D dates has SE ~= 1 / sqrt((n_tickers - 1) * D). Each test computes it from its own
sizes and checks it is at most 0.005, i.e. the 0.02 threshold is >= 4 standard errors away.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from investml.pipeline_config import MODEL_TYPES, load_pipeline_config
from training.evaluation import evaluate_walk_forward
from training.learners import ArtifactError, Learner, build_learner, load_learner
from training.learners.base import read_artifact_meta
from training.learners.ensemble import EnsembleLearner, stack_oof
from training.learners.lstm import LSTMLearner, _Windows
from training.learners.prophet_learner import ProphetLearner
from training.learners.xgb import XGBoostLearner, apply_calibration, fit_isotonic, fit_platt

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["ret_1", "ret_5", "ret_20", "vol_20"]
MAX_SE = 0.005


def make_frame(n_tickers: int, n_days: int, *, seed: int, signal: float = 0.0, horizons=(1,)) -> pd.DataFrame:
    """Random walks with iid Student-t(4) returns and past-only features.

    With ``signal > 0`` the feature ``planted`` (known at ``t``) drives the return from ``t`` to
    ``t + 1``: ``r_{t+1} = signal * 0.01 * planted_t + noise``.
    """
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2012-01-02", periods=n_days)
    planted = rng.standard_normal((n_days, n_tickers))
    rets = rng.standard_t(4, size=(n_days, n_tickers)) * 0.01 / np.sqrt(2.0)
    rets[1:] += signal * 0.01 * planted[:-1]
    close = 40.0 * np.cumprod(1.0 + rets, axis=0)
    parts = []
    for j in range(n_tickers):
        c = pd.Series(close[:, j])
        r1 = c.pct_change()
        part = pd.DataFrame(
            {
                "ticker": f"S{j:03d}",
                "date": dates,
                "adj_close": c.to_numpy(),
                "ret_1": r1.to_numpy(),
                "ret_5": c.pct_change(5).to_numpy(),
                "ret_20": c.pct_change(20).to_numpy(),
                "vol_20": r1.rolling(20).std().to_numpy(),
                "planted": planted[:, j],
            }
        )
        for h in sorted({1, *horizons}):
            fwd = c.shift(-h) / c - 1.0
            part[f"fwd_ret_{h}"] = fwd.to_numpy()
            part[f"fwd_dir_{h}"] = np.where(fwd.isna(), np.nan, (fwd > 0).astype(float))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def tiny_lstm(**kw) -> LSTMLearner:
    params = dict(
        features=5,
        sequence_length=5,
        hidden_size=8,
        epochs=2,
        batch_size=512,
        patience=1,
        learning_rate=3e-3,
        device="cpu",
    )
    return LSTMLearner(**{**params, **kw})


def tiny_xgb(**kw) -> XGBoostLearner:
    return XGBoostLearner(**{**dict(n_estimators=30, max_depth=3, n_jobs=2), **kw})


def tiny_prophet(**kw) -> ProphetLearner:
    return ProphetLearner(**{**dict(history_days=120, uncertainty_samples=50), **kw})


def ic_standard_error(oof: pd.DataFrame) -> float:
    per_date = oof.groupby("date")["ticker"].size()
    return float(1.0 / np.sqrt(((per_date - 1).clip(lower=1)).sum()))


# --------------------------------------------------------------------------------------------------
# leakage: no signal -> no out-of-sample IC


@pytest.fixture(scope="module")
def noise_frame() -> pd.DataFrame:
    return make_frame(100, 600, seed=11)


@pytest.fixture(scope="module")
def noise_results(noise_frame):
    # rolling 120-date training windows keep the fits tiny; 4 folds x 119 dates are scored
    kw = dict(
        feature_columns=FEATURES, horizon=1, n_folds=4, test_days=119, min_train_days=120, expanding=False
    )
    return {
        "xgboost_classifier": evaluate_walk_forward(tiny_xgb, noise_frame, **kw),
        "lstm_predictor": evaluate_walk_forward(tiny_lstm, noise_frame, **kw),
    }


def _assert_no_ic(result, name):
    se = ic_standard_error(result.oof)
    assert se <= MAX_SE, f"{name}: sample too small for the 0.02 threshold (SE {se:.4f})"
    assert abs(result.metrics["ic"]) < 0.02, (name, result.metrics["ic"], se)
    assert abs(result.metrics["rank_ic"]) < 0.02, (name, result.metrics["rank_ic"], se)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["xgboost_classifier", "lstm_predictor"])
def test_no_out_of_sample_ic_on_noise(noise_results, name):
    result = noise_results[name]
    _assert_no_ic(result, name)
    assert result.oof[["expected_return", "prob_up", "confidence"]].notna().all().all()
    assert result.oof["confidence"].between(0, 1).all()


@pytest.mark.slow
def test_prophet_no_out_of_sample_ic_on_noise():
    # Prophet fits per ticker, so fewer tickers and more dates: 40 tickers x 2 folds of 560 dates
    frame = make_frame(40, 1250, seed=12)
    result = evaluate_walk_forward(
        tiny_prophet,
        frame,
        feature_columns=[],
        horizon=1,
        n_folds=2,
        test_days=560,
        min_train_days=120,
        expanding=False,
    )
    _assert_no_ic(result, "prophet_forecaster")
    assert result.oof["confidence"].between(0, 1).all()


@pytest.mark.slow
def test_ensemble_of_oof_predictions_has_no_ic_on_noise(noise_frame, noise_results):
    stacked = stack_oof({n: r.oof for n, r in noise_results.items()}, labels=noise_frame)
    members = list(noise_results)
    result = evaluate_walk_forward(
        lambda: EnsembleLearner(members=members),
        stacked,
        feature_columns=members,
        horizon=1,
        n_folds=5,
        test_days=90,
        min_train_days=20,
    )
    _assert_no_ic(result, "ensemble")


# --------------------------------------------------------------------------------------------------
# positive control: the same pipeline finds a planted signal (so the tests above can fail)


@pytest.mark.slow
def test_planted_signal_is_found_by_xgboost_lstm_and_ensemble():
    frame = make_frame(60, 400, seed=5, signal=0.5)
    features = [*FEATURES, "planted"]
    kw = dict(
        feature_columns=features, horizon=1, n_folds=2, test_days=120, min_train_days=120, expanding=False
    )
    results = {
        "xgboost_classifier": evaluate_walk_forward(tiny_xgb, frame, **kw),
        "lstm_predictor": evaluate_walk_forward(tiny_lstm, frame, **kw),
    }
    for name, result in results.items():
        assert result.metrics["ic"] > 0.1, (name, result.metrics)
        assert result.metrics["rank_ic"] > 0.1, (name, result.metrics)
        assert result.metrics["ic"] > result.baselines["momentum_20"]["ic"] + 0.1
        assert result.metrics["accuracy"] > 0.55
    stacked = stack_oof({n: r.oof for n, r in results.items()}, labels=frame)
    ens = evaluate_walk_forward(
        lambda: EnsembleLearner(members=list(results)),
        stacked,
        feature_columns=list(results),
        horizon=1,
        n_folds=2,
        test_days=80,
        min_train_days=60,
    )
    assert ens.metrics["ic"] > 0.1


def test_learners_rank_the_cross_section_not_the_market():
    """Every stock rises with a strong market on most days; only a small stock-specific part is
    predictable (from ``planted``). A learner of the absolute direction would say "up" for nearly
    every row (the failure that made XGBoost rank stocks backwards); the cross-sectional targets
    make both learners rank by the stock-specific part, with "beats the median" near half the rows."""
    frame = make_frame(60, 400, seed=11, signal=0.3)
    rng = np.random.default_rng(3)
    market = pd.Series(0.02 + 0.01 * rng.standard_normal(400), index=pd.bdate_range("2012-01-02", periods=400))
    shift = frame["date"].map(market).to_numpy()
    frame["fwd_ret_1"] = frame["fwd_ret_1"] + shift
    frame["fwd_dir_1"] = np.where(frame["fwd_ret_1"].isna(), np.nan, (frame["fwd_ret_1"] > 0).astype(float))
    assert frame["fwd_dir_1"].mean() > 0.9  # the absolute direction is the market's
    kw = dict(feature_columns=[*FEATURES, "planted"], horizon=1, n_folds=2, test_days=120, min_train_days=120)
    for make in (tiny_xgb, tiny_lstm):
        result = evaluate_walk_forward(make, frame, **kw)
        assert result.metrics["rank_ic"] > 0.1, result.metrics
        assert result.metrics["accuracy"] > 0.55, result.metrics  # beats-the-median classes
        assert 0.3 < float(np.mean(result.oof["prob_up"] > 0.5)) < 0.7, result.learner


def test_xgboost_early_stopping_and_importance(small_frame):
    frame = make_frame(40, 300, seed=8, signal=0.5)
    learner = tiny_xgb(n_estimators=60, eval_every=10, permutation_top=3)
    report = learner.fit(frame, feature_columns=[*FEATURES, "planted"], horizon=1)
    curve = report.extra["validation_rank_ic"]
    assert sorted(curve) == [10, 20, 30, 40, 50, 60]
    best = report.extra["best_iteration"]
    assert curve[best] == max(curve.values())
    assert learner.booster.num_boosted_rounds() == best
    gain = report.extra["importance"]["gain"]
    assert max(gain, key=gain.get) == "planted"
    permutation = report.extra["importance"]["permutation"]
    assert len(permutation) == 3 and max(permutation, key=permutation.get) == "planted"
    assert permutation["planted"] > 0.1  # shuffling the signal loses most of the validation IC


def test_xgboost_rank_objective_groups_by_date():
    frame = make_frame(40, 300, seed=9, signal=0.5)
    result = evaluate_walk_forward(lambda: tiny_xgb(objective="rank"), frame, feature_columns=[*FEATURES, "planted"],
                                   horizon=1, n_folds=2, test_days=80, min_train_days=120)
    assert result.metrics["rank_ic"] > 0.1


# --------------------------------------------------------------------------------------------------
# artifacts


@pytest.fixture(scope="module")
def small_frame() -> pd.DataFrame:
    return make_frame(12, 160, seed=7, signal=0.3, horizons=(5,))


@pytest.fixture(scope="module")
def fitted(small_frame):
    dates = np.sort(small_frame["date"].unique())
    train = small_frame[small_frame["date"] <= dates[119]]
    test = small_frame[small_frame["date"] >= dates[125]]
    learners: dict[str, Learner] = {
        "lstm_predictor": tiny_lstm(sequence_length=6, epochs=3),
        "xgboost_classifier": tiny_xgb(),
        "prophet_forecaster": tiny_prophet(history_days=100),
    }
    for learner in learners.values():
        learner.fit(train, feature_columns=[*FEATURES, "planted"], horizon=5)
    members = {n: learner.predict(train).expected_return for n, learner in learners.items()}
    # (a unit-test shortcut: in production the stack is fitted on out-of-fold predictions only)
    ens = EnsembleLearner()
    ens.fit_from_oof(members, train["fwd_ret_5"].to_numpy(), horizon=5)
    learners["ensemble"] = ens
    test_inputs = {n: test for n in learners}
    test_inputs["ensemble"] = test.assign(**{n: learners[n].predict(test).expected_return for n in members})
    return learners, test_inputs


NAMES = ["lstm_predictor", "xgboost_classifier", "prophet_forecaster", "ensemble"]


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_gives_identical_predictions(fitted, name):
    learners, inputs = fitted
    learner = learners[name]
    assert isinstance(learner, Learner)
    before = learner.predict(inputs[name])
    blob = learner.to_bytes()
    assert blob == learner.to_bytes()  # deterministic bytes
    for loaded in (type(learner).from_bytes(blob), load_learner(blob)):
        after = loaded.predict(inputs[name])
        np.testing.assert_array_equal(before.expected_return, after.expected_return)
        np.testing.assert_array_equal(before.prob_up, after.prob_up)
        np.testing.assert_array_equal(before.confidence, after.confidence)
    meta = read_artifact_meta(blob)
    assert meta["learner"] == name == learner.name
    assert np.isfinite(before.expected_return).all()
    assert ((before.confidence >= 0) & (before.confidence <= 1)).all()
    np.testing.assert_allclose(before.confidence, np.abs(2 * before.prob_up - 1))


@pytest.mark.parametrize("name", NAMES)
def test_any_changed_byte_is_rejected(fitted, name):
    blob = fitted[0][name].to_bytes()
    cls = type(fitted[0][name])
    positions = sorted(
        {
            0,
            7,
            8,
            39,
            40,
            41,
            len(blob) // 3,
            len(blob) // 2,
            len(blob) - 30,
            len(blob) - 1,
            *np.random.default_rng(0).integers(0, len(blob), 20).tolist(),
        }
    )
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(ArtifactError, match="checksum|not an investml"):
            cls.from_bytes(bytes(bad))
    with pytest.raises(ArtifactError):
        cls.from_bytes(blob[:-1])
    with pytest.raises(ArtifactError):
        load_learner(b"PK\x03\x04" + blob[4:])


def test_xgboost_matrix_path_equals_frame_path(fitted):
    learners, inputs = fitted
    xgb_learner, frame = learners["xgboost_classifier"], inputs["xgboost_classifier"].copy()
    columns = xgb_learner.feature_columns
    frame.loc[frame.index[:3], columns[0]] = [np.nan, np.inf, -np.inf]  # missing values the same way
    by_frame = xgb_learner.predict(frame)
    by_matrix = xgb_learner.predict_matrix(frame[columns].to_numpy(dtype=np.float64))
    np.testing.assert_allclose(by_matrix.prob_up, by_frame.prob_up, rtol=0, atol=1e-7)
    np.testing.assert_allclose(by_matrix.expected_return, by_frame.expected_return, rtol=0, atol=1e-9)
    assert xgb_learner.tree_table() is not None  # small batches go through the verified table
    for i in range(8):
        one = xgb_learner.predict_matrix(frame[columns].to_numpy()[i])
        assert one.prob_up.shape == (1,) and one.prob_up[0] == pytest.approx(by_frame.prob_up[i], abs=1e-6)
    with pytest.raises(ValueError, match=f"expected {len(columns)} columns"):
        xgb_learner.predict_matrix(np.zeros((1, len(columns) + 1)))


def test_artifact_of_another_learner_is_refused(fitted):
    with pytest.raises(ArtifactError, match="holds a 'xgboost_classifier' model"):
        LSTMLearner.from_bytes(fitted[0]["xgboost_classifier"].to_bytes())


def test_no_pickle_anywhere_in_the_learner_code():
    sources = [
        *(REPO / "training" / "learners").glob("*.py"),
        REPO / "training" / "evaluation.py",
        REPO / "registry" / "metrics.py",
    ]
    for path in sources:
        text = path.read_text()
        for banned in ("import pickle", "joblib", "torch.load", "allow_pickle=True", "cloudpickle", "dill"):
            assert banned not in text, f"{path.name} uses {banned}"


def test_learner_modules_do_not_import_django():
    code = (
        "import sys\n"
        "import training.learners.lstm, training.learners.xgb, training.learners.ensemble\n"
        "import training.learners.prophet_learner, training.evaluation, registry.metrics\n"
        "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], 'django imported'\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        check=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )


# --------------------------------------------------------------------------------------------------
# determinism, sequences, options


def test_lstm_and_xgboost_are_seeded(small_frame):
    feats = [*FEATURES, "planted"]
    for make in (lambda s: tiny_lstm(seed=s, dropout=0.1), lambda s: tiny_xgb(seed=s)):
        preds = []
        for seed in (1, 1, 2):
            learner = make(seed)
            learner.fit(small_frame, feature_columns=feats, horizon=5)
            preds.append(learner.predict(small_frame).expected_return)
        np.testing.assert_array_equal(preds[0], preds[1])
        assert not np.array_equal(preds[0], preds[2])


def test_lstm_sequences_never_cross_tickers():
    x = np.arange(1, 8, dtype=np.float32).reshape(-1, 1)  # rows 1..7
    codes = np.array([0, 0, 0, 1, 1, 2, 2])
    windows = _Windows(x, codes, 3)
    batch = windows.batch(np.arange(7))[:, :, 0]
    expected = [[0, 0, 1], [0, 1, 2], [1, 2, 3], [0, 0, 4], [0, 4, 5], [0, 0, 6], [0, 6, 7]]
    np.testing.assert_array_equal(batch, expected)


def test_lstm_predictions_depend_only_on_own_ticker_and_follow_row_order(fitted, small_frame):
    lstm = fitted[0]["lstm_predictor"]
    one = small_frame[small_frame["ticker"] == "S003"]
    alone = lstm.predict(one).expected_return
    mixed = lstm.predict(small_frame).expected_return[(small_frame["ticker"] == "S003").to_numpy()]
    np.testing.assert_allclose(alone, mixed, rtol=1e-6, atol=1e-9)
    shuffled = small_frame.sample(frac=1.0, random_state=0)
    again = lstm.predict(shuffled).expected_return
    base = pd.Series(lstm.predict(small_frame).expected_return, index=small_frame.index)
    np.testing.assert_allclose(again, base.loc[shuffled.index].to_numpy(), rtol=1e-6, atol=1e-9)


def test_lstm_performance_options_run(small_frame):
    learner = tiny_lstm(use_amp=True, gradient_checkpointing=True, num_layers=2, dropout=0.2, epochs=2)
    report = learner.fit(small_frame, feature_columns=FEATURES, horizon=5)
    assert report.extra["best_epoch"] >= 1 and report.extra["n_validation"] > 0
    assert np.isfinite(learner.predict(small_frame).expected_return).all()
    # bfloat16 where this CPU has the kernels for it, else float32 (a CPU without them cannot build the primitive)
    assert report.extra["amp"] == ("bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "off")


def test_lstm_warm_start_fine_tunes_the_previous_network(small_frame):
    """The daily refit's warm start: yesterday's network and input scaling, at most ``epochs``
    epochs, never worse on validation than where it started; a mismatch is refused."""
    feats = [*FEATURES, "planted"]
    dates = np.sort(small_frame["date"].unique())
    yesterday = small_frame[small_frame["date"] <= dates[-2]]
    previous = tiny_lstm(sequence_length=6, epochs=4)
    previous.fit(yesterday, feature_columns=feats, horizon=5)
    previous_out = previous.predict(small_frame).expected_return

    warm = tiny_lstm(sequence_length=6, epochs=4)
    warm.warm_start_from(LSTMLearner.from_bytes(previous.to_bytes()), epochs=1)
    report = warm.fit(small_frame, feature_columns=feats, horizon=5)
    assert report.extra["warm_start"] and report.extra["epochs_run"] == 1
    assert report.extra["best_epoch"] in (0, 1)  # 0: fine-tuning did not beat the starting weights
    np.testing.assert_array_equal(warm._state["mean"], previous._state["mean"])  # the scaling is kept
    out = warm.predict(small_frame).expected_return
    assert np.isfinite(out).all()
    # started from yesterday's network: far closer to it than a network fitted from scratch
    cold = tiny_lstm(sequence_length=6, epochs=4, seed=3)
    cold.fit(small_frame, feature_columns=feats, horizon=5)
    cold_out = cold.predict(small_frame).expected_return
    assert np.corrcoef(out, previous_out)[0, 1] > np.corrcoef(cold_out, previous_out)[0, 1]
    if report.extra["best_epoch"] == 1:  # the fine-tuned weights won: they are new
        assert warm.to_bytes() != previous.to_bytes()
    assert tiny_lstm(sequence_length=6).fit(small_frame, feature_columns=feats, horizon=5).extra["warm_start"] is False

    other = tiny_lstm(sequence_length=6)
    other.warm_start_from(previous, epochs=1)
    with pytest.raises(ValueError, match="same feature columns"):
        other.fit(small_frame, feature_columns=FEATURES, horizon=5)
    with pytest.raises(ValueError, match="same features, sequence_length"):
        tiny_lstm(sequence_length=8).warm_start_from(previous, epochs=1)


def test_calibrators():
    rng = np.random.default_rng(0)
    margin = rng.standard_normal(4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 * margin - 0.2)))).astype(float)
    platt = fit_platt(margin, y)
    assert platt["a"] == pytest.approx(0.5, abs=0.1) and platt["b"] == pytest.approx(-0.2, abs=0.1)
    iso = fit_isotonic(margin, y)
    grid = np.linspace(-3, 3, 50)
    assert np.all(np.diff(apply_calibration(iso, grid)) >= 0)
    assert apply_calibration(iso, np.array([-10.0, 10.0])).tolist() == [iso["y"][0], iso["y"][-1]]


def test_build_learner_from_the_pipeline_config():
    config = load_pipeline_config(REPO / "config" / "pipeline.json")
    for name in MODEL_TYPES:
        learner = build_learner(name, config.model_params(name))
        assert learner.name == name and learner.model_type == MODEL_TYPES[name]
    lstm = build_learner("lstm_predictor", config.model_params("lstm_predictor"))
    assert lstm.params["sequence_length"] == 60 and lstm.params["features"] == 20


# --------------------------------------------------------------------------------------------------
# prophet fan-out


def test_prophet_chunks_merge_to_the_full_fit_and_warm_start(small_frame):
    dates = np.sort(small_frame["date"].unique())
    train = small_frame[small_frame["date"] <= dates[110]]
    test = small_frame[small_frame["date"] >= dates[120]].sample(frac=1.0, random_state=1)
    tickers = sorted(small_frame["ticker"].unique())
    full = tiny_prophet()
    full.fit(train, horizon=5)
    parts = []
    for chunk in (tickers[:5], tickers[5:]):
        part = tiny_prophet()
        part.fit_tickers(train, chunk, horizon=5)
        parts.append(part)
    merged = parts[0].merge(parts[1:])
    assert merged.tickers == tickers
    np.testing.assert_array_equal(full.predict(test).expected_return, merged.predict(test).expected_return)
    np.testing.assert_array_equal(full.predict(test).prob_up, merged.predict(test).prob_up)
    with pytest.raises(ValueError, match="more than one part"):
        parts[0].merge([parts[0]])

    later = small_frame[small_frame["date"] <= dates[115]]
    warm = tiny_prophet()
    report = warm.fit(later, horizon=5, warm_start=full)
    assert report.extra["warm_started"] == len(tickers)
    assert np.isfinite(warm.predict(test).expected_return).all()

    unknown = test.assign(ticker="NOPE")
    assert np.isnan(full.predict(unknown).expected_return).all()


def test_ensemble_weighs_calm_and_volatile_days_alike():
    """The stack learns the day's rank, so a member that is only right on a few wild days (whose
    returns dominate any fit on the return itself) does not outweigh one right on every calm day."""
    rng = np.random.default_rng(3)
    n_dates, n_names = 400, 60
    dates = np.repeat(pd.bdate_range("2015-01-02", periods=n_dates).to_numpy(), n_names)
    wild = np.repeat(rng.random(n_dates) < 0.1, n_names)
    signal = rng.standard_normal(n_dates * n_names)
    ret = np.where(wild, 0.20, 0.01) * (0.3 * signal + rng.standard_normal(n_dates * n_names))
    noise = rng.standard_normal(n_dates * n_names)
    members = {"calm_expert": np.where(wild, noise, signal), "wild_expert": np.where(wild, signal, noise)}
    frame = pd.DataFrame({"ticker": np.tile([f"T{i}" for i in range(n_names)], n_dates), "date": dates,
                          "fwd_ret_5": ret, **members})
    ens = EnsembleLearner(members=list(members))
    report = ens.fit(frame, feature_columns=list(members), horizon=5)
    weights = report.extra["weights"]
    assert weights["calm_expert"] > 3 * weights["wild_expert"] > 0
    # the blend is still a return forecast: above the drift for the stocks it ranks high
    preds = ens.predict(frame)
    top = frame["calm_expert"].to_numpy() > 1.0
    assert preds.expected_return[top & ~wild].mean() > ens.intercept > preds.expected_return[~top & ~wild].min()
    assert 0.5 < preds.prob_up[top & ~wild].mean() < 1.0
    restored = EnsembleLearner.from_bytes(ens.to_bytes())
    np.testing.assert_allclose(restored.predict(frame).expected_return, preds.expected_return)
