"""The feature store end to end on real data (SQLite or PostgreSQL, file cache or Redis).

Bars are a few real tickers of the bundled sample (sample_data/); the store lives in tmp_path and the
online store uses a per-test cache key prefix.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from features.feature_sets import DEFAULT_SPEC, FEATURE_COLUMNS, FeatureSpec
from features.models import (
    BenchmarkReturn,
    FeatureMaterialization,
    FeatureSetVersion,
    FundamentalSnapshot,
    NewsItem,
    PriceBar,
    Ticker,
)
from features.selectors import (
    feature_columns,
    feature_store_for,
    get_online_features,
    get_online_features_many,
    latest_feature_set_version,
    latest_feature_vectors,
    online_vector_key,
    training_frame,
)
from features.services.feature_set_versions import ensure_feature_set_version
from features.services.feature_store import build_features
from features.store_format import files_checksum, sha256_file
from features.tasks import build_features_task

pytestmark = pytest.mark.django_db

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
PRICES = SAMPLE / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
SPY = SAMPLE / "benchmarks" / "SPY_returns.csv"
CUT = date(2018, 2, 28)  # first build up to here, then the rest arrives
SHORT, SHORT_FROM = "NVDA", "2015-07-06"  # its bars before SHORT_FROM are left out: a shorter history
FIRST = ["AAPL", "JPM", "MSFT", SHORT]
LATE = "XOM"  # arrives only with the second batch: a ticker the store has never held
LABELS = ["adj_close", "fwd_ret_1", "fwd_dir_1", "fwd_ret_5", "fwd_dir_5"]


@pytest.fixture(scope="module")
def price_files(tmp_path_factory) -> dict[str, Path]:
    bars = pd.read_csv(PRICES)
    bars = bars[bars["ticker"].isin([*FIRST, LATE]) & ((bars["ticker"] != SHORT) | (bars["date"] >= SHORT_FROM))]
    folder = tmp_path_factory.mktemp("prices")
    dates = pd.to_datetime(bars["date"]).dt.date
    first = bars[(dates <= CUT) & bars["ticker"].isin(FIRST)]
    rest = bars[(dates > CUT) | (bars["ticker"] == LATE)]
    paths = {"first": folder / "first.csv", "rest": folder / "rest.csv"}
    first.to_csv(paths["first"], index=False)
    rest.to_csv(paths["rest"], index=False)
    return paths


@pytest.fixture(autouse=True)
def isolated_store(settings, tmp_path):
    """Parquet under tmp_path; cache keys under a prefix of their own (Redis or file cache)."""
    settings.ML_FEATURES_PATH = tmp_path / "features"
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-fs-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    yield settings.ML_FEATURES_PATH
    ids = list(FeatureSetVersion.objects.values_list("id", flat=True))
    keys = [online_vector_key(v, t) for v in ids for t in [*FIRST, LATE]]
    keys += [f"features:online:columns:{v}" for v in ids]
    keys += [f"features:online:{kind}:{name}" for kind in ("index", "current") for name in ("default", "research")]
    cache.delete_many(keys)


def _quiet(name: str, *args, **kwargs) -> str:
    out = io.StringIO()
    call_command(name, *map(str, args), stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue()


@pytest.fixture
def market(price_files):
    """First batch of bars, SPY returns and two real fundamentals snapshots in the database."""
    _quiet("ingest_prices", price_files["first"])
    _quiet("ingest_benchmark", SPY, "--symbol", "SPY")
    snapshots = SAMPLE / "fundamentals"
    _quiet("ingest_fundamentals", snapshots / "constituents-financials_2017-03-08.csv",
           snapshots / "constituents-financials_2018-02-08.csv")
    return price_files


def _store_frames(version: FeatureSetVersion) -> tuple[pd.DataFrame, pd.DataFrame]:
    store = feature_store_for(version=version)
    return store.read("features"), store.read("labels")


def _assert_same(a: pd.DataFrame, b: pd.DataFrame, columns: list[str], atol: float = 1e-9) -> None:
    assert a["ticker"].tolist() == b["ticker"].tolist()
    assert (a["date"].to_numpy() == b["date"].to_numpy()).all()
    x, y = a[columns].to_numpy(np.float64), b[columns].to_numpy(np.float64)
    assert (np.isnan(x) == np.isnan(y)).all()
    both = ~np.isnan(x)
    assert np.abs(x[both] - y[both]).max(initial=0.0) <= atol


def test_full_build_layout_materialization_and_checksum(market, isolated_store):
    summary = build_features()
    version = FeatureSetVersion.objects.get(pk=summary.version_id)
    assert (summary.mode, summary.version, summary.tickers) == ("full", "1.0.0", len(FIRST))
    assert summary.rows == PriceBar.objects.count()
    assert summary.rows_per_second > 0

    mat = FeatureMaterialization.objects.get(pk=summary.materialization_id)
    assert mat.status == "succeeded" and mat.mode == "full" and mat.error == ""
    assert mat.storage_path == "default/1.0.0" and mat.rows == summary.rows and mat.tickers == len(FIRST)
    assert mat.start_date == date(2013, 5, 21) and mat.end_date == CUT
    assert mat.duration_seconds > 0 and mat.finished_at is not None

    root = isolated_store / mat.storage_path
    manifest = json.loads((root / "_manifest.json").read_text())
    mine = {rel: e for rel, e in manifest["files"].items() if e["tag"] == f"m{mat.pk}"}
    assert mat.files_written == len(mine) == len(manifest["files"])
    # the recorded checksum is over the files on disk
    assert mat.checksum == files_checksum((rel, sha256_file(root / rel)) for rel in mine)
    assert feature_store_for(version=version).verify() == []
    # monthly partitions, features and labels apart, nothing left over from the atomic writes
    parts = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert set(parts) == set(manifest["files"])
    assert "features/year=2018/month=02" in {p.rsplit("/", 1)[0] for p in parts}
    assert not list(root.rglob("*.tmp"))
    features = pd.read_parquet(root / next(p for p in parts if p.startswith("features/year=2018/month=02")))
    assert list(features.columns) == ["ticker", "date", *FEATURE_COLUMNS]
    assert not set(LABELS) & set(features.columns)
    assert all(features[c].dtype == np.float32 for c in FEATURE_COLUMNS)
    assert manifest["last_dates"] == {t: CUT.isoformat() for t in FIRST}


def test_incremental_after_new_bars_equals_full_rebuild(market, isolated_store):
    first = build_features()
    version = FeatureSetVersion.objects.get(pk=first.version_id)
    store = feature_store_for(version=version)
    before = store.manifest()["files"]
    _quiet("ingest_prices", market["rest"])
    # news for a ticker the store holds: the sentiment path through the database
    aapl = Ticker.objects.get(symbol="AAPL")
    NewsItem.objects.create(ticker=aapl, published_at=pd.Timestamp("2018-04-10 14:00", tz="America/New_York"),
                            headline="Apple beats estimates", sentiment=0.6, content_hash="a" * 64)

    inc = build_features()
    assert inc.mode == "incremental" and inc.tickers == len(FIRST) + 1
    new_rows = PriceBar.objects.filter(date__gt=CUT).exclude(ticker__symbol=LATE).count()
    assert inc.rows == new_rows + PriceBar.objects.filter(ticker__symbol=LATE).count()
    after = store.manifest()
    # a daily update rewrites only the months it touches: older partitions keep their files
    old_months = {rel for rel, e in before.items() if rel.startswith("features/") and (e["year"], e["month"]) < (2018, 2)}
    assert old_months <= set(after["files"])
    assert after["last_dates"] == {t: "2018-05-18" for t in [*FIRST, LATE]}
    inc_features, inc_labels = _store_frames(version)

    full = build_features(full=True)
    assert full.mode == "full" and full.version_id == version.pk
    full_features, full_labels = _store_frames(version)
    assert len(inc_features) == PriceBar.objects.count()
    _assert_same(inc_features, full_features, FEATURE_COLUMNS)
    _assert_same(inc_labels, full_labels, LABELS)
    news_day = inc_features[(inc_features["ticker"] == "AAPL") & (inc_features["date"] == "2018-04-10")]
    assert news_day["has_news"].item() == 1.0 and news_day["sent_mean_5"].item() == pytest.approx(0.6)
    # SPY ends 2018-04-27: the build used the equal-weighted universe after it
    assert inc.market_days.get("equal_weighted", 0) > 0


def test_incremental_without_new_bars_writes_nothing(market, isolated_store):
    first = build_features()
    root = isolated_store / first.storage_path
    snapshot = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
    manifest = (root / "_manifest.json").read_bytes()

    again = build_features()
    assert (again.mode, again.rows, again.files_written, again.checksum) == ("incremental", 0, 0, "")
    assert (root / "_manifest.json").read_bytes() == manifest
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != ".lock"} == snapshot
    mat = FeatureMaterialization.objects.get(pk=again.materialization_id)
    assert (mat.status, mat.rows, mat.files_written) == ("succeeded", 0, 0)


def test_training_frame_is_point_in_time(market):
    build_features()
    before = training_frame()
    assert list(before.columns) == ["ticker", "date", *FEATURE_COLUMNS, *LABELS]
    assert before["date"].max() == pd.Timestamp(CUT)
    _quiet("ingest_prices", market["rest"])
    build_features()
    after = training_frame(end=CUT, tickers=FIRST)
    # features at t do not change when later bars arrive
    _assert_same(before, after, FEATURE_COLUMNS, atol=0.0)
    build_features(full=True)
    rebuilt = training_frame(end=CUT, tickers=["aapl", "JPM", "MSFT", SHORT.lower()])
    _assert_same(before, rebuilt, FEATURE_COLUMNS)

    # labels at t look exactly h bars ahead of the ticker's own bars
    bars = pd.DataFrame(PriceBar.objects.filter(ticker__symbol="MSFT").order_by("date").values("date", "adj_close"))
    ac = bars["adj_close"].to_numpy()
    full = training_frame(tickers=["MSFT"])
    assert len(full) == len(ac)
    for h in (1, 5):
        expected = np.full(len(ac), np.nan)
        expected[:-h] = ac[h:] / ac[:-h] - 1.0
        got = full[f"fwd_ret_{h}"].to_numpy()
        assert np.allclose(got, expected, rtol=0, atol=1e-12, equal_nan=True)
        assert np.array_equal(full[f"fwd_dir_{h}"].to_numpy()[:-h], (expected[:-h] > 0).astype(float))
        # before the new bars arrived the last h labels were unknown; the incremental build filled them
        old = before[before["ticker"] == "MSFT"]
        assert old[f"fwd_ret_{h}"].iloc[-h:].isna().all()
        assert full.loc[full["date"] == pd.Timestamp(CUT), f"fwd_ret_{h}"].notna().all()
    assert np.allclose(full["adj_close"], ac)
    # other horizons come from the stored prices
    h3 = training_frame(tickers=["MSFT"], horizons=(3,), start="2018-01-02")
    assert list(h3.columns)[-3:] == ["adj_close", "fwd_ret_3", "fwd_dir_3"]
    i = int(np.searchsorted(bars["date"].to_numpy(), date(2018, 1, 2)))
    assert h3["fwd_ret_3"].iloc[0] == pytest.approx(ac[i + 3] / ac[i] - 1.0, abs=1e-12)


def test_fundamentals_snapshot_after_t_is_never_used(market):
    t = date(2017, 6, 15)
    aapl = Ticker.objects.get(symbol="AAPL")
    known = FundamentalSnapshot.objects.get(ticker=aapl, as_of=date(2017, 3, 8)).pe_ratio
    FundamentalSnapshot.objects.create(ticker=aapl, as_of=t, pe_ratio=999.0, source="test")  # known at t's close
    FundamentalSnapshot.objects.create(ticker=aapl, as_of=t + timedelta(days=7), pe_ratio=555.0, source="test")
    build_features(tickers=["AAPL"])
    frame = training_frame(tickers=["AAPL"], start="2017-06-01", end="2017-07-31").set_index("date")["pe_ratio"]
    assert frame[pd.Timestamp(t)] == pytest.approx(known, rel=1e-6)  # a snapshot dated t is not used at t
    assert frame[pd.Timestamp("2017-06-16")] == pytest.approx(999.0)
    assert frame[pd.Timestamp("2017-06-22")] == pytest.approx(999.0)  # the later one is not used before its date
    assert frame[pd.Timestamp("2017-06-23")] == pytest.approx(555.0)


def test_online_store_serves_the_latest_vector(market):
    summary = build_features()
    version = FeatureSetVersion.objects.get(pk=summary.version_id)
    vector = get_online_features(ticker="aapl")
    assert vector is not None and vector.ticker == "AAPL" and vector.date == CUT
    assert (vector.version_id, vector.version, vector.feature_set) == (version.pk, "1.0.0", "default")
    assert vector.columns == feature_columns(version=version) == FEATURE_COLUMNS
    latest = latest_feature_vectors(tickers=["AAPL"]).iloc[0]
    expected = latest[FEATURE_COLUMNS].to_numpy(np.float64)
    assert np.array_equal(vector.as_array(), expected, equal_nan=True)
    assert vector.as_dict()["rsi_14"] == pytest.approx(float(latest["rsi_14"]))
    assert get_online_features(ticker="NOPE") is None
    assert set(get_online_features_many(tickers=FIRST)) == set(FIRST)

    _quiet("ingest_prices", market["rest"])
    build_features()
    assert get_online_features(ticker="AAPL").date == date(2018, 5, 18)
    assert get_online_features(ticker=LATE, version=version).date == date(2018, 5, 18)
    index = json.loads(cache.get("features:online:index:default"))
    assert index["version_id"] == version.pk and index["tickers"] == sorted([*FIRST, LATE])
    assert json.loads(cache.get(online_vector_key(version.pk, "MSFT")))["columns_hash"] == index["columns_hash"]


def test_parallel_chunk_builds_publish_despite_each_others_commits(market, monkeypatch):
    """Chunks of one fanned-out build run in parallel: a chunk that reads the manifest just before
    another chunk's commit deletes the month files it superseded reads again, and publishes only
    its own tickers' vectors (the default version does not normalize across stocks)."""
    from features.store import FeatureStore

    build_features()
    _quiet("ingest_prices", market["rest"])
    original = FeatureStore.latest_rows
    interleaved = {}

    def other_chunk_commits_first(self, *, tickers=None, manifest=None):
        if not interleaved:  # the other chunk commits between this chunk's manifest read and its reads
            interleaved["started"] = True
            interleaved["other"] = build_features(tickers=["MSFT", SHORT])
        return original(self, tickers=tickers, manifest=manifest)

    monkeypatch.setattr(FeatureStore, "latest_rows", other_chunk_commits_first)
    mine = build_features(tickers=["AAPL", "JPM"])
    other = interleaved["other"]
    assert (mine.mode, other.mode) == ("incremental", "incremental")
    assert (mine.online_vectors, other.online_vectors) == (2, 2)
    for ticker in ["AAPL", "JPM", "MSFT", SHORT]:
        assert get_online_features(ticker=ticker).date == date(2018, 5, 18), ticker
    assert FeatureMaterialization.objects.filter(status="failed").count() == 0


def test_feature_set_versions(market):
    first = ensure_feature_set_version(name="research", spec=DEFAULT_SPEC)
    assert first.version == "1.0.0" and first.feature_names == FEATURE_COLUMNS
    assert ensure_feature_set_version(name="research", spec=FeatureSpec()).pk == first.pk
    assert first.features[0] == {"name": "rsi_14", "group": "technical", "params": {"period": 14, "input": "adj_close"}}

    tuned = ensure_feature_set_version(name="research", spec={"beta_min_obs": 40})  # a parameter changed
    assert tuned.version == "1.1.0" and tuned.content_hash != first.content_hash
    added = ensure_feature_set_version(name="research", spec={"beta_min_obs": 40, "ema_periods": [12, 26, 50, 100]})
    assert added.version == "1.2.0" and "ema_100" in added.feature_names
    removed = ensure_feature_set_version(name="research", spec={"sma_periods": [5, 10, 20, 50],
                                                                "close_to_sma": [20, 50]})
    assert removed.version == "2.0.0" and "sma_200" not in removed.feature_names
    assert ensure_feature_set_version(name="research", spec=DEFAULT_SPEC).pk == first.pk  # same content, same row
    assert FeatureSetVersion.objects.filter(feature_set__name="research").count() == 4

    # a named set builds with its own spec and columns, in a store of its own
    summary = build_features(feature_set="research", tickers=["MSFT"])
    assert (summary.feature_set, summary.version) == ("research", "2.0.0")
    frame = training_frame(feature_set_version="research@2.0.0")
    assert "sma_200" not in frame.columns and frame["ticker"].unique().tolist() == ["MSFT"]
    assert latest_feature_set_version(name="research").pk == removed.pk


def test_build_features_command_export_and_errors(market, tmp_path):
    path = tmp_path / "matrix.parquet"
    out = _quiet("build_features", "--tickers", "AAPL,MSFT", "--start", "2018-01-01", "--export", path)
    assert "tickers" in out and "rows/s" in out and f"to {path}" in out
    matrix = pd.read_parquet(path)
    assert list(matrix.columns) == ["ticker", "date", *FEATURE_COLUMNS]
    assert set(matrix["ticker"]) == {"AAPL", "MSFT"}
    assert pd.to_datetime(matrix["date"]).min() >= pd.Timestamp("2018-01-01")
    assert len(matrix) == 2 * PriceBar.objects.filter(ticker__symbol="AAPL", date__gte="2018-01-01").count()

    with pytest.raises(CommandError, match="unknown ticker: ZZZZ"):
        _quiet("build_features", "--tickers", "AAPL,ZZZZ")
    with pytest.raises(CommandError, match="invalid start date '2018-13-01'"):
        _quiet("build_features", "--start", "2018-13-01")
    with pytest.raises(CommandError, match="start 2018-03-01 is after end 2018-01-01"):
        _quiet("build_features", "--start", "2018-03-01", "--end", "2018-01-01")
    with pytest.raises(CommandError, match="no bars between 2020-01-01"):
        _quiet("build_features", "--start", "2020-01-01")
    with pytest.raises(CommandError, match=f"no bars for {SHORT}"):
        _quiet("build_features", "--tickers", SHORT, "--end", "2014-12-31")
    with pytest.raises(CommandError, match="unknown feature set 'nope'"):
        _quiet("build_features", "--feature-set", "nope")


def test_failed_build_is_recorded_and_leaves_the_store_as_it_was(market, monkeypatch, isolated_store):
    ok = build_features()
    root = isolated_store / ok.storage_path
    manifest = (root / "_manifest.json").read_bytes()
    files = sorted(root.rglob("*.parquet"))

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("features.build.compute_chunk", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_features(full=True)
    mat = FeatureMaterialization.objects.order_by("-id").first()
    assert mat.status == "failed" and "disk on fire" in mat.error and mat.finished_at is not None
    assert (root / "_manifest.json").read_bytes() == manifest
    assert sorted(root.rglob("*.parquet")) == files


def test_build_task_and_ingest_benchmark(market):
    result = build_features_task.run(tickers=["JPM"])
    assert result["tickers"] == 1 and result["rows"] > 1000 and result["mode"] == "full"

    out = _quiet("ingest_benchmark", SPY, "--json")
    counts = json.loads(out.strip().splitlines()[-1])
    rows = BenchmarkReturn.objects.filter(symbol="SPY").count()
    assert counts["rows_unchanged"] == rows == counts["rows_read"] and counts["rows_loaded"] == 0
    first = pd.read_csv(SPY).iloc[0]  # "2013-01-02 00:00:00+00:00", 0.0256...
    assert rows == len(pd.read_csv(SPY))
    stored = BenchmarkReturn.objects.get(symbol="SPY", date=date.fromisoformat(first["date"][:10]))
    assert stored.ret == pytest.approx(first["return"])
    with pytest.raises(CommandError, match="expected columns date,return"):
        _quiet("ingest_benchmark", PRICES)


def test_load_sample_ingests_the_benchmark(settings, tmp_path):
    root = tmp_path / "sample"
    (root / "prices").mkdir(parents=True)
    (root / "prices" / "bars.csv").write_text(
        "date,ticker,open,high,low,close,adj_close,volume\n2018-01-02,AAA,10,11,9,10.5,10.4,1000\n"
    )
    (root / "benchmarks").mkdir()
    shutil.copy(SPY, root / "benchmarks" / "SPY_returns.csv")
    settings.ML_DATA_PATH = root
    out = _quiet("load_sample")
    assert "SPY benchmark" in out
    assert BenchmarkReturn.objects.filter(symbol="SPY").count() == len(pd.read_csv(SPY))
