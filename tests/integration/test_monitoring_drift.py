"""Drift through the Django layer on real prices: the bundled sample (50 S&P 500 stocks, 2013-05-21..
2018-05-18) ingested and built into a feature store; an active version whose training profile covers
2014-03..2015-06; the January-2016 sell-off drifts, raises the alert and requests a retrain, calm
windows do not; the command's JSON."""

from __future__ import annotations

import gzip
import importlib
import io
import json
import logging
import uuid
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from features.feature_sets import FEATURE_GROUPS, MODEL_FEATURE_COLUMNS
from features.profile import profile_build
from features.selectors import latest_feature_set_version, training_frame
from features.services.feature_store import build_features
from monitoring import services
from monitoring.drift import compare_to_profile
from monitoring.models import Alert, DriftReport
from registry.models import ModelVersion, RegisteredModel

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

PRICES = Path(__file__).resolve().parents[2] / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
REFERENCE = ("2014-03-01", "2015-06-30")  # training period: from ~200 bars into the sample, every window full
CRISIS_END, LATER_END = date(2016, 1, 29), date(2016, 2, 11)  # 20-day windows from 2015-12-31 and 2016-01-14
DRIFT_COLUMNS = [c for c in MODEL_FEATURE_COLUMNS if c not in FEATURE_GROUPS["calendar"]]
CALM_ENDS = [date(2014, 8, 29), date(2015, 5, 29), date(2014, 12, 31)]


def _subset() -> tuple[list[str], pd.DataFrame]:
    """Every sample ticker that trades on every day of the sample (all 50 do)."""
    bars = pd.read_csv(PRICES)
    counts = bars.groupby("ticker").size()
    tickers = sorted(counts[counts == bars["date"].nunique()].index)
    assert len(tickers) >= 40
    return tickers, bars[bars["ticker"].isin(tickers)]


@pytest.fixture
def real_store(settings, tmp_path):
    settings.ML_FEATURES_PATH = tmp_path / "features"
    settings.ML_MODELS_PATH = tmp_path / "ml_models"
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-drift-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.DATA_DRIFT_THRESHOLD = 0.3
    settings.MONITORING_DRIFT_WINDOW_DAYS = 20
    settings.ENABLE_AUTO_RETRAINING = True
    tickers, bars = _subset()
    path = tmp_path / "bars.csv.gz"
    with gzip.open(path, "wt") as fh:
        bars.to_csv(fh, index=False)
    call_command("ingest_prices", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    build_features(tickers=tickers)
    return tickers


@pytest.fixture
def retrains(monkeypatch):
    """Record retrain requests instead of queueing pipeline runs (``training.orchestrator.triggers.request_retrain``)."""
    from training.orchestrator import triggers

    calls: list[dict] = []
    monkeypatch.setattr(triggers, "request_retrain", lambda **kw: calls.append(kw) or None)
    return calls


def calm_reference() -> pd.DataFrame:
    frame = training_frame(start=REFERENCE[0], end=REFERENCE[1])
    return frame


def histogram_profile(frame: pd.DataFrame, columns: list[str], bins: int = 10) -> dict:
    """The histogram format training stored before profile version 2 (edges incl. min/max, counts)."""
    out = {"bins": bins, "rows": len(frame), "features": {}}
    for col in columns:
        values = frame[col].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            out["features"][col] = {"edges": [], "counts": [], "missing": int(len(values))}
            continue
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)))
        counts, _ = np.histogram(finite, bins=edges)
        out["features"][col] = {"edges": edges.tolist(), "counts": counts.tolist(),
                                "missing": int(len(values) - len(finite))}
    return out


def sample_profile(frame: pd.DataFrame, columns: list[str], bins: int = 10) -> dict:
    """The format monitoring stored before profile version 2 (inner edges, shares, a sample)."""
    features = {}
    for col in columns:
        values = frame[col].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        if len(values) < 50:
            continue
        inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
        sample = np.sort(np.random.default_rng(0).choice(values, size=min(4_000, len(values)), replace=False))
        features[col] = {"edges": inner.tolist(), "shares": (counts / counts.sum()).tolist(),
                         "sample": sample.tolist(), "n": len(values), "mean": float(values.mean())}
    return {"version": 1, "bins": bins, "features": features}


def active_version(name: str, profile: dict) -> ModelVersion:
    registered = RegisteredModel.objects.create(name=name, model_type="tree_ensemble")
    return ModelVersion.objects.create(
        model=registered, version="1.0.0", major=1, minor=0, patch=0, status="active", target="fwd_ret_5",
        feature_set_version=latest_feature_set_version(), drift_reference=profile,
        metrics={"accuracy": 0.53, "rank_ic": 0.03},
    )


def test_january_2016_drifts_alerts_and_retrains_calm_windows_do_not(real_store, retrains, caplog):
    reference = calm_reference()
    version = active_version("xgboost_classifier", profile_build(reference, DRIFT_COLUMNS))
    # a second model profiled on fewer features is judged on its own columns
    active_version("lstm_predictor", profile_build(reference, DRIFT_COLUMNS[:20]))

    with caplog.at_level(logging.INFO, logger="monitoring"):
        reports = services.check_drift(window_days=20, as_of=CRISIS_END)
    assert len(reports) == 2
    for report in reports:
        assert report.drift_detected, (report.model_version, report.drift_share)
        assert report.drift_share > 0.5
        assert (report.window_start, report.window_end) == (date(2015, 12, 31), CRISIS_END)
        assert "calendar" not in FEATURE_GROUPS or not set(FEATURE_GROUPS["calendar"]) & set(report.features)
    crisis = next(r for r in reports if r.model_version == version)
    assert {"vol_20", "ret_20"} <= {n for n, f in crisis.features.items() if f["drifted"]}
    alerts = Alert.objects.filter(kind="data_drift", resolved=False).order_by("key")
    assert [a.key for a in alerts] == ["lstm_predictor", "xgboost_classifier"]
    assert sorted(c["trigger"] for c in retrains) == ["drift", "drift"]
    assert caplog.messages.count("Retraining trigger activated: data_drift threshold exceeded") == 2

    services.check_drift(model_name="xgboost_classifier", window_days=20, as_of=LATER_END)
    assert Alert.objects.get(kind="data_drift", key="xgboost_classifier", resolved=False).count == 2
    assert len(retrains) == 2  # still drifting: no second request

    for end in CALM_ENDS:
        calm = services.check_drift(window_days=20, as_of=end)
        for report in calm:
            assert not report.drift_detected, (end, report.model_version, report.drift_share)
            assert report.drift_share <= 0.2, (end, report.drift_share)
    assert not Alert.objects.filter(kind="data_drift", resolved=False).exists()  # cleared by calm windows
    assert DriftReport.objects.count() == 2 + 1 + 2 * len(CALM_ENDS)


def test_check_drift_command_json_for_a_model_and_for_explicit_periods(real_store, retrains):
    active_version("xgboost_classifier", profile_build(calm_reference(), DRIFT_COLUMNS))
    out = io.StringIO()
    call_command("check_drift", "--model", "xgboost_classifier", "--window-days", "20", "--end", "2016-01-29",
                 "--json", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert "DRIFT" in lines[0]
    payload = json.loads(lines[-1])
    assert {"model", "version", "window", "drift_detected", "drift_share", "features"} <= set(payload)
    assert payload["model"] == "xgboost_classifier" and payload["version"] == "1.0.0"
    assert payload["window"] == ["2015-12-31", "2016-01-29"]
    assert payload["drift_detected"] is True and isinstance(payload["drift_share"], float)
    assert set(payload["features"]) == set(DRIFT_COLUMNS) & set(payload["features"]) and len(payload["features"]) >= 15
    for stats in payload["features"].values():
        assert isinstance(stats["psi"], float) and isinstance(stats["drifted"], bool)

    def periods(*args) -> dict:
        buf = io.StringIO()
        call_command("check_drift", "--reference-start", REFERENCE[0], "--reference-end", REFERENCE[1], *args,
                     "--json", stdout=buf)
        return json.loads(buf.getvalue().strip().splitlines()[-1])

    crisis = periods("--start", "2016-01-01", "--end", "2016-02-29")
    assert crisis["model"] is None and crisis["drift_detected"] is True
    assert crisis["reference"] == ["2014-03-03", "2015-06-30"]  # the first and last trading days
    for start, end in (("2014-06-01", "2014-08-31"), ("2015-03-01", "2015-05-31")):
        calm = periods("--start", start, "--end", end)
        assert calm["drift_detected"] is False and calm["drift_share"] < 0.15, (start, calm["drift_share"])

    with pytest.raises(CommandError, match="no active version"):
        call_command("check_drift", "--model", "nope", stdout=io.StringIO())
    with pytest.raises(CommandError, match="explicit periods need"):
        call_command("check_drift", "--reference-start", REFERENCE[0], stdout=io.StringIO())


def test_stored_profiles_of_earlier_formats_migrate_to_the_one_format():
    profile_v2 = importlib.import_module("registry.migrations.0003_drift_reference_profile_v2").profile_v2
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=20_000), "few": [1.0] * 10 + [np.nan] * 19_990})
    same = pd.DataFrame({"x": rng.normal(size=5_000)})
    shifted = pd.DataFrame({"x": rng.normal(0.8, 1.3, size=5_000)})
    native = profile_build(frame, ["x", "few"])
    assert set(native["features"]) == {"x"} and profile_v2(native) is None  # already version 2: untouched
    for old in (histogram_profile(frame, ["x", "few"]), sample_profile(frame, ["x", "few"])):
        profile = profile_v2(old)
        assert profile["version"] == 2 and set(profile["features"]) == {"x"}
        entry = profile["features"]["x"]
        assert len(entry["edges"]) == 9 and sum(entry["shares"]) == pytest.approx(1.0) and entry["n"] == 20_000
        assert len(entry["quantiles"]) == 101 and entry["quantiles"][50] == pytest.approx(0.0, abs=0.05)
        for current in (same, shifted):  # judged as the version-2 profile of the same data judges
            converted, fresh = compare_to_profile(profile, current), compare_to_profile(native, current)
            assert converted.features["x"].drifted == fresh.features["x"].drifted
            # a 10-bin histogram is uniform within each decile: its KS statistic is within a few points
            assert converted.features["x"].ks_statistic == pytest.approx(fresh.features["x"].ks_statistic, abs=0.05)
        assert not compare_to_profile(profile, same).features["x"].drifted
        assert compare_to_profile(profile, shifted).features["x"].drifted
