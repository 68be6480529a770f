"""Per-date cross-sectional normalization (features.normalize) and the store that applies it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features import engine, feature_sets
from features.build import ChunkData, combine_market, equal_weighted_returns, materialize
from features.normalize import CLIP, cs_apply, cs_stats
from features.store import FeatureStore
from features.synthetic import generate_market
from features.versioning import version_content
from investml.pipeline_config import FEATURE_SETS


def _panel(seed: int = 0, n_dates: int = 30, n_names: int = 41) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-03-01", periods=n_dates)
    frame = pd.DataFrame({"ticker": np.tile([f"T{i:02d}" for i in range(n_names)], n_dates),
                          "date": np.repeat(dates, n_names)})
    level = np.repeat(rng.uniform(1, 50, n_dates), n_names)  # a day-wide level that must not matter
    frame["vol"] = (level * (1 + rng.standard_normal(len(frame)) * 0.1)).astype(np.float32)
    frame["flag"] = (rng.random(len(frame)) < 0.1).astype(np.float32)
    frame["weekday"] = frame["date"].dt.dayofweek.astype(np.float32)
    frame.loc[frame.index % 13 == 0, "vol"] = np.nan
    return frame


def test_robust_zscore_removes_the_days_level_and_keeps_the_ranking():
    frame = _panel()
    cols = ["vol", "flag", "weekday"]
    stats = cs_stats(frame, cols)
    out = cs_apply(frame, cols, stats)
    for _, day in out.groupby("date"):
        raw = frame.loc[day.index]
        assert abs(np.nanmedian(day["vol"])) < 1e-6  # centred on the day's median
        ok = raw["vol"].notna()
        assert (day.loc[ok, "vol"].rank().to_numpy() == raw.loc[ok, "vol"].rank().to_numpy()).all() or \
            day["vol"].abs().max() == pytest.approx(CLIP)  # monotone (clipping may tie the tails)
        assert (day["weekday"] == 0).all()  # equal for every stock of the day: no information
    assert out["vol"].isna().equals(frame["vol"].isna())  # NaN stays NaN
    assert out["vol"].abs().max() <= CLIP
    # a mostly-zero flag (MAD 0) is scaled by its standard deviation, not divided by zero
    assert np.isfinite(out["flag"]).all() and out["flag"].max() > 0
    # the transform of one stock needs only the day's statistics, not the other stocks
    one = frame[frame["ticker"] == "T05"]
    np.testing.assert_array_equal(cs_apply(one, cols, stats)[cols].to_numpy(), out.loc[one.index, cols].to_numpy())


def test_apply_names_the_dates_without_statistics():
    frame = _panel(n_dates=3)
    stats = cs_stats(frame.iloc[: 41 * 2], ["vol"])
    with pytest.raises(KeyError, match="1 date\\(s\\): 2021-03-03"):
        cs_apply(frame, ["vol"], stats)


def test_spec_records_the_normalization_in_its_version():
    spec = replace(feature_sets.DEFAULT_SPEC, cs_normalization="robust_zscore")
    assert spec.version_hash() != feature_sets.DEFAULT_SPEC.version_hash()
    assert "cs_normalization" not in feature_sets.DEFAULT_SPEC.to_dict()  # old versions keep their hash
    assert version_content(spec)["params"]["cs_normalization"] == "robust_zscore"
    with pytest.raises(ValueError, match="cs_normalization must be one of"):
        feature_sets.FeatureSpec.from_params({"cs_normalization": "zscore-ish"})


def test_store_normalizes_every_read_over_the_whole_universe(tmp_path):
    frame = _panel()
    cols = ["vol", "flag", "weekday"]
    store = FeatureStore(tmp_path / "v", feature_columns=cols, cs_normalization="robust_zscore")
    with store.writer() as w:
        w.write_parts(features=frame, labels=None)
        w.commit()
    expected = cs_apply(frame, cols, cs_stats(frame, cols))
    back = store.read("features")
    np.testing.assert_allclose(back[cols].to_numpy(), expected.sort_values(["ticker", "date"])[cols].to_numpy(),
                               rtol=1e-6, atol=1e-6)
    # a read of two tickers is normalized against all 41, not against each other
    two = store.read("features", tickers=["T01", "T02"])
    np.testing.assert_array_equal(two[cols].to_numpy(), back[back["ticker"].isin(["T01", "T02"])][cols].to_numpy())
    latest = store.latest_rows(tickers=["T03"])
    np.testing.assert_array_equal(latest[cols].to_numpy(), back[back["ticker"] == "T03"][cols].to_numpy()[-1:])
    assert store.verify() == []
    # a correction of one stock's last day re-states that day for every stock, in the same commit
    last = frame["date"].max()
    fix = frame[(frame["ticker"] == "T00") & (frame["date"] == last)].assign(vol=np.float32(1e6))
    with store.writer() as w:
        w.upsert(features=fix, labels=None)
        w.commit()
    after = store.read("features")
    changed = after[after["date"] == last]
    old = back[back["date"] == last]
    assert changed.loc[changed["ticker"] == "T00", "vol"].iloc[0] == pytest.approx(CLIP)
    assert not np.array_equal(changed["vol"].to_numpy(), old["vol"].to_numpy(), equal_nan=True)
    months = [e for e in store.manifest()["files"].values() if e["dataset"] == "xsection"]
    assert len(months) == len({(e["year"], e["month"]) for e in months})  # one statistics file per month
    # a plain store of the same rows returns raw values
    raw = FeatureStore(tmp_path / "raw", feature_columns=cols)
    with raw.writer() as w:
        w.write_parts(features=frame, labels=None)
        w.commit()
    assert raw.read("features")["vol"].max() > 10


def test_incremental_build_equals_full_build_with_normalization(tmp_path):
    bars = generate_market(8, 2.5, 11)
    bars["ticker"] = bars["ticker"].astype(str)
    spec = replace(feature_sets.DEFAULT_SPEC, cs_normalization="robust_zscore")
    cols = spec.columns()
    cut = pd.Timestamp(np.sort(bars["date"].unique())[-15])

    def market(frame, stored=None):
        ew = equal_weighted_returns(frame["ticker"], frame["date"], frame["adj_close"], max_gap_days=120)
        return combine_market(frame["date"].unique(), benchmark=None, fallback=ew, stored=stored)

    def chunks(frame, since=None):
        tickers = sorted(frame["ticker"].unique())
        for i in range(0, len(tickers), 3):
            part = tickers[i : i + 3]
            yield ChunkData(bars=frame[frame["ticker"].isin(part)],
                               since=None if since is None else {t: since[t] for t in part if t in since})

    inc = FeatureStore(tmp_path / "inc", feature_columns=cols, cs_normalization="robust_zscore")
    old = bars[bars["date"] < cut]
    ret, src = market(old)
    materialize(store=inc, chunks=chunks(old), spec=spec, market_returns=ret, market_source=src, incremental=False)
    since = {t: pd.Timestamp(d) + pd.Timedelta(days=1) for t, d in inc.last_dates().items()}
    window = engine.select_lookback(bars, cut)
    window["ticker"] = window["ticker"].astype(str)
    ret2, src2 = market(window, stored=inc.market())
    materialize(store=inc, chunks=chunks(window, since), spec=spec, market_returns=ret2, market_source=src2,
                   incremental=True)
    full = FeatureStore(tmp_path / "full", feature_columns=cols, cs_normalization="robust_zscore")
    ret3, src3 = market(bars)
    materialize(store=full, chunks=chunks(bars), spec=spec, market_returns=ret3, market_source=src3,
                   incremental=False)
    a, b = inc.read("features"), full.read("features")
    assert a[["ticker", "date"]].equals(b[["ticker", "date"]])
    assert np.array_equal(a[cols].to_numpy(np.float64), b[cols].to_numpy(np.float64), equal_nan=True)
    assert np.nanmax(np.abs(a[cols].to_numpy(np.float64))) <= CLIP


def test_every_named_feature_set_is_a_valid_training_choice():
    assert set(FEATURE_SETS) == set(feature_sets.FEATURE_SETS)
    for name, spec in feature_sets.FEATURE_SETS.items():
        assert spec.cs_normalization == ("robust_zscore" if name.endswith("_cs") else "none")
