"""The offline store without Django (features.store, store_writer, store_format, versioning, build):
atomic writes, checksums, commits, reads, versions, the pipeline."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date

import numpy as np
import pandas as pd
import pytest

from features import engine, feature_sets
from features.build import ChunkData, combine_market, compute_chunk, equal_weighted_returns, materialize
from features.store import FeatureStore
from features.store_format import (
    ReplaceScope,
    atomic_write_bytes,
    files_checksum,
    label_store_columns,
    sha256_file,
)
from features.synthetic import generate_market
from features.versioning import content_hash, feature_definitions, next_feature_set_version, version_content


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    frame = generate_market(6, 4.5, 7)  # > MAX_LOOKBACK bars for most tickers, ragged listings
    frame["ticker"] = frame["ticker"].astype(str)
    return frame


def _frames(n_tickers: int = 3, start: str = "2020-01-01", days: int = 70) -> tuple[pd.DataFrame, pd.DataFrame]:
    dates = pd.bdate_range(start, periods=days)
    rows = [(f"T{i}", d) for i in range(n_tickers) for d in dates]
    feats = pd.DataFrame(rows, columns=["ticker", "date"])
    feats["a"] = np.arange(len(feats), dtype=np.float32)
    feats["b"] = np.where(feats.index % 7 == 0, np.nan, 1.5).astype(np.float32)
    labels = feats[["ticker", "date"]].copy()
    labels["adj_close"] = 100.0 + np.arange(len(feats))
    return feats, labels


def _market(frame: pd.DataFrame, stored: pd.Series | None = None) -> tuple[pd.Series, pd.Series]:
    ew = equal_weighted_returns(frame["ticker"], frame["date"], frame["adj_close"], max_gap_days=120)
    return combine_market(frame["date"].unique(), benchmark=None, fallback=ew, stored=stored)


def _chunks(frame: pd.DataFrame, since: dict | None = None, size: int = 4):
    tickers = sorted(frame["ticker"].unique())
    for i in range(0, len(tickers), size):
        part = tickers[i : i + size]
        yield ChunkData(bars=frame[frame["ticker"].isin(part)],
                           since=None if since is None else {t: since[t] for t in part if t in since})


# --- files ------------------------------------------------------------------------------------


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "data.bin"
    atomic_write_bytes(target, b"old content")

    def failing_fsync(fd):
        raise OSError("device full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="device full"):
        atomic_write_bytes(target, b"new content that never lands")
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "sub" / "fresh.bin", b"x" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]  # no temp file, no fresh.bin


def test_checksums():
    assert files_checksum([]) == ""
    a = files_checksum([("x/1.parquet", "aa"), ("x/2.parquet", "bb")])
    assert a == files_checksum([("x/2.parquet", "bb"), ("x/1.parquet", "aa")])  # order-independent
    assert a == hashlib.sha256(b"x/1.parquet aa\nx/2.parquet bb").hexdigest()
    assert a != files_checksum([("x/1.parquet", "aa"), ("x/2.parquet", "bc")])


def test_commit_read_verify_and_checksum(tmp_path):
    feats, labels = _frames()
    store = FeatureStore(tmp_path / "v")
    with store.writer(tag="m1") as w:
        w.write_parts(features=feats, labels=labels)
        result = w.commit()
    manifest = store.manifest()
    assert result.rows == len(feats) and result.tickers == 3 and result.generation == 1
    assert {rel.split("/")[0] for rel in manifest["files"]} == {"features", "labels"}
    assert {(e["year"], e["month"]) for e in manifest["files"].values()} == {(2020, 1), (2020, 2), (2020, 3), (2020, 4)}
    for rel, sha in result.files_written:
        assert sha256_file(store.root / rel) == sha == manifest["files"][rel]["sha256"]
    assert result.checksum == files_checksum(result.files_written)
    assert store.verify() == []
    assert manifest["last_dates"] == {f"T{i}": feats["date"].max().date().isoformat() for i in range(3)}

    back = store.read("features")
    assert back[["ticker", "date"]].equals(feats[["ticker", "date"]])
    assert np.array_equal(back["b"].to_numpy(), feats["b"].to_numpy(), equal_nan=True)
    assert back["a"].dtype == np.float32
    sub = store.read("features", start="2020-02-03", end="2020-02-07", tickers=["T1"], columns=["a"])
    assert list(sub.columns) == ["ticker", "date", "a"] and len(sub) == 5 and set(sub["ticker"]) == {"T1"}
    assert store.read("labels", start="2030-01-01").empty

    victim = store.root / result.files_written[0][0]
    victim.write_bytes(victim.read_bytes()[:-3] + b"xyz")
    assert store.verify() == [f"{result.files_written[0][0]}: checksum mismatch"]


def test_a_market_series_replaced_after_the_manifest_was_read_is_read_from_the_new_one(tmp_path):
    """Parallel feature chunks: one reads the manifest, another commits a new market series and
    removes the old file; the first still gets a series (the current one), not FileNotFoundError."""
    feats, labels = _frames()
    store = FeatureStore(tmp_path / "v")
    dates = pd.DatetimeIndex(sorted(feats["date"].unique()))
    with store.writer() as w:
        w.write_parts(features=feats, labels=labels)
        w.set_market(pd.Series(0.01, index=dates))
        w.commit()
    seen = store.manifest()
    with store.writer() as w:
        w.set_market(pd.Series(0.02, index=dates))
        w.commit()
    assert not (store.root / seen["market"]).exists()
    assert store.market(seen).eq(0.02).all()


def test_failed_writer_leaves_nothing(tmp_path):
    feats, labels = _frames()
    store = FeatureStore(tmp_path / "v")
    with pytest.raises(RuntimeError):
        with store.writer() as w:
            w.write_parts(features=feats, labels=labels)
            raise RuntimeError("chunk 2 failed")
    assert not list(store.root.rglob("*.parquet")) and not (store.root / "_manifest.json").exists()
    assert store.read("features").empty


def test_upsert_rewrites_only_the_touched_month(tmp_path):
    feats, labels = _frames()
    store = FeatureStore(tmp_path / "v")
    with store.writer() as w:
        w.write_parts(features=feats, labels=labels)
        w.commit()
    before = store.manifest()["files"]
    # one new day for every ticker, and a correction of an existing April row
    new_day = pd.Timestamp(feats["date"].max()) + pd.offsets.BDay(1)
    upd = pd.DataFrame({"ticker": ["T0", "T1", "T2", "T1"], "date": [new_day] * 3 + [feats["date"].max()],
                        "a": np.float32([-1, -2, -3, -4]), "b": np.float32([0, 0, 0, 0])})
    with store.writer() as w:
        w.upsert(features=upd, labels=None)
        res = w.commit()
    after = store.manifest()["files"]
    april = {rel for rel, e in after.items() if e["dataset"] == "features" and e["month"] == 4}
    assert len(april) == 1 and not april & set(before)  # compacted into one new file
    assert {rel for rel in before if "month=04" not in rel or rel.startswith("labels")} <= set(after)
    assert res.rows == 4 and len(res.files_written) == 1
    back = store.read("features", tickers=["T1"])
    assert back["a"].iloc[-1] == -2 and back["a"].iloc[-2] == -4
    assert len(store.read("features")) == len(feats) + 3
    assert store.last_dates()["T0"] == new_day.date()


def test_full_rebuild_of_some_tickers_keeps_the_others(tmp_path):
    feats, labels = _frames()
    store = FeatureStore(tmp_path / "v")
    with store.writer() as w:
        w.write_parts(features=feats, labels=labels)
        w.commit()
    t1 = feats[(feats["ticker"] == "T1") & (feats["date"] >= "2020-03-02")].assign(a=np.float32(7))
    scope = ReplaceScope(tickers=frozenset({"T1"}), start=date(2020, 3, 2))
    with store.writer(replace=scope) as w:
        w.write_parts(features=t1.iloc[:-5], labels=None)  # five fewer days than before
        w.commit()
    back = store.read("features")
    assert len(back) == len(feats) - 5
    t1_back = back[back["ticker"] == "T1"]
    assert (t1_back.loc[t1_back["date"] >= "2020-03-02", "a"] == 7).all()
    assert back[back["ticker"] != "T1"].reset_index(drop=True).equals(
        feats[feats["ticker"] != "T1"].reset_index(drop=True).astype(back.dtypes.to_dict()))
    assert store.last_dates()["T1"] == t1.iloc[-6]["date"].date()
    # rebuilding T1's range with no rows at all: its last date comes from what is left before the range
    with store.writer(replace=scope) as w:
        w.write_parts(features=t1.iloc[:0], labels=None)
        w.commit()
    assert store.last_dates()["T1"] == date(2020, 2, 28)


def test_vacuum_removes_only_old_unreferenced_files(tmp_path):
    feats, labels = _frames(1, days=5)
    store = FeatureStore(tmp_path / "v")
    with store.writer() as w:
        w.write_parts(features=feats, labels=labels)
        w.commit()
    stray = store.root / "features" / "year=2020" / "month=01" / "part-dead.parquet"
    stray.write_bytes(b"left by a killed writer")
    assert store.vacuum(min_age_s=3600) == 0
    os.utime(stray, (0, 0))
    assert store.vacuum(min_age_s=3600) == 1 and not stray.exists()
    assert store.verify() == []


# --- versions ---------------------------------------------------------------------------------


def test_feature_definitions_and_content_hash():
    defs = feature_definitions(feature_sets.DEFAULT_SPEC)
    assert [d["name"] for d in defs] == feature_sets.FEATURE_COLUMNS
    byname = {d["name"]: d for d in defs}
    assert byname["macd_signal_12_26_9"]["params"]["signal"] == 9
    assert byname["beta_60"] == {"name": "beta_60", "group": "market",
                                 "params": {"window": 60, "min_obs": 48, "market": "SPY else equal-weighted"}}
    content = version_content(feature_sets.DEFAULT_SPEC)
    assert content["storage"] == {"format": 1, "dtype": "float32", "label_horizons": [1, 5]}
    h = content_hash(content)
    assert h == content_hash(json.loads(json.dumps(content))) and len(h) == 64
    other = feature_sets.FeatureSpec.from_params({"annualization": 260})
    assert content_hash(version_content(other)) != h


def test_next_feature_set_version():
    base = version_content(feature_sets.DEFAULT_SPEC)
    f, p = base["features"], base["params"]
    assert next_feature_set_version(None, None, None, f, p) == "1.0.0"
    assert next_feature_set_version("1.3.2", f, p, f, p) == "1.3.3"  # only storage/labels changed
    tuned = version_content(feature_sets.FeatureSpec.from_params({"annualization": 260}))
    assert next_feature_set_version("1.3.2", f, p, tuned["features"], tuned["params"]) == "1.4.0"
    more = version_content(feature_sets.FeatureSpec.from_params({"ema_periods": [12, 26, 50, 100]}))
    assert next_feature_set_version("1.3.2", f, p, more["features"], more["params"]) == "1.4.0"
    renamed = version_content(feature_sets.FeatureSpec.from_params({"rsi_period": 10}))
    assert next_feature_set_version("1.3.2", f, p, renamed["features"], renamed["params"]) == "2.0.0"


# --- pipeline ---------------------------------------------------------------------------------


def test_equal_weighted_market_matches_the_engine(bars):
    ew = equal_weighted_returns(bars["ticker"], bars["date"], bars["adj_close"])
    own = engine.compute_features(bars)
    given = engine.compute_features(bars, market_returns=ew)
    cols = ["beta_60", "corr_60", "rel_ret_20"]
    assert np.array_equal(own[cols].to_numpy(), given[cols].to_numpy(), equal_nan=True)


def test_incremental_materialize_equals_full_rebuild(bars, tmp_path):
    dates = np.sort(bars["date"].unique())
    cut = pd.Timestamp(dates[-25])
    old = bars[bars["date"] < cut]
    store = FeatureStore(tmp_path / "inc")
    ret, src = _market(old)
    materialize(store=store, chunks=_chunks(old), spec=feature_sets.DEFAULT_SPEC, market_returns=ret,
                   market_source=src, incremental=False)
    since = {t: pd.Timestamp(d) + pd.Timedelta(days=1) for t, d in store.last_dates().items()}
    window = engine.select_lookback(bars, cut)
    window["ticker"] = window["ticker"].astype(str)
    ret2, src2 = _market(window, stored=store.market())
    messages: list[str] = []
    inc = materialize(store=store, chunks=_chunks(window, since), spec=feature_sets.DEFAULT_SPEC, market_returns=ret2,
                         market_source=src2, incremental=True, progress=messages.append)
    assert inc.rows == int((bars["date"] >= cut).sum())
    assert messages and "rows/s" in messages[0]

    full = FeatureStore(tmp_path / "full")
    ret3, src3 = _market(bars)
    materialize(store=full, chunks=_chunks(bars), spec=feature_sets.DEFAULT_SPEC, market_returns=ret3,
                   market_source=src3, incremental=False)
    for dataset in ("features", "labels"):
        a, b = store.read(dataset), full.read(dataset)
        assert a[["ticker", "date"]].equals(b[["ticker", "date"]])
        x, y = a.iloc[:, 2:].to_numpy(np.float64), b.iloc[:, 2:].to_numpy(np.float64)
        assert np.array_equal(x, y, equal_nan=True)
    assert store.market().equals(full.market())

    # nothing new: no commit, nothing written
    before = (store.root / "_manifest.json").read_bytes()
    again = materialize(store=store, chunks=iter([]), spec=feature_sets.DEFAULT_SPEC, market_returns=ret2,
                           incremental=True)
    assert again.rows == 0 and again.commit.files_written == []
    assert (store.root / "_manifest.json").read_bytes() == before


def test_compute_chunk_trims_to_the_range_and_keeps_labels_apart(bars):
    ret, _ = _market(bars)
    res = compute_chunk(ChunkData(bars=bars), spec=feature_sets.DEFAULT_SPEC, market_returns=ret,
                           start="2011-01-03", end="2011-06-30")
    assert res.features["date"].min() >= pd.Timestamp("2011-01-03")
    assert res.features["date"].max() <= pd.Timestamp("2011-06-30")
    assert list(res.features.columns) == ["ticker", "date", *feature_sets.FEATURE_COLUMNS]
    assert list(res.labels.columns) == ["ticker", "date", *label_store_columns()]
    assert res.features[feature_sets.FEATURE_COLUMNS].dtypes.eq(np.float32).all()
    assert res.talib_s > 0
