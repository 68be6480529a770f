"""The model registry against the real database: semantic versions, atomic verified artifacts, the
promotion gate on the same out-of-sample window, rollback, and the deployment history."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from features.models import FeatureSet, FeatureSetVersion
from registry import artifacts, loaders, services
from registry.artifacts import ArtifactIntegrityError
from registry.gate import daily_skill, skill_confidence
from registry.models import DeploymentEvent, ModelVersion
from registry.selectors import get_version, load_version
from training import selectors as training_selectors
from training.learners import build_learner
from training.learners.ensemble import EnsembleLearner

pytestmark = pytest.mark.django_db

FEATURES = ["f1", "f2", "f3"]


@pytest.fixture(autouse=True)
def models_path(settings, tmp_path):
    settings.ML_MODELS_PATH = tmp_path / "ml_models"
    settings.MODEL_PERFORMANCE_THRESHOLD = 0.75
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"training": {"promotion_metric": "rank_ic"}})
    return settings.ML_MODELS_PATH


def synthetic_frame(n_tickers=30, n_days=160, *, seed=0, start="2016-01-04") -> pd.DataFrame:
    """Random walks with three features; ``f1`` predicts the next 5-day return a little."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=n_days)
    parts = []
    for j in range(n_tickers):
        f = rng.standard_normal((n_days, 3))
        r = rng.standard_normal(n_days) * 0.01
        close = 50 * np.cumprod(1 + r)
        fwd5 = np.full(n_days, np.nan)
        fwd5[:-5] = close[5:] / close[:-5] - 1 + 0.004 * f[:-5, 0]
        fwd1 = np.full(n_days, np.nan)
        fwd1[:-1] = close[1:] / close[:-1] - 1
        parts.append(pd.DataFrame({
            "ticker": f"T{j:02d}", "date": dates, "adj_close": close, "f1": f[:, 0], "f2": f[:, 1], "f3": f[:, 2],
            "fwd_ret_1": fwd1, "fwd_dir_1": np.where(np.isnan(fwd1), np.nan, fwd1 > 0),
            "fwd_ret_5": fwd5, "fwd_dir_5": np.where(np.isnan(fwd5), np.nan, fwd5 > 0),
        }))
    return pd.concat(parts, ignore_index=True)


def oof_for(signal_strength: float, *, seed: int, n_tickers=40, n_days=120, start="2017-01-02") -> pd.DataFrame:
    """An out-of-sample table whose forecast has about the given correlation with the outcome."""
    rng = np.random.default_rng(seed)
    outcome_rng = np.random.default_rng(1234)  # the same outcomes for every version
    dates = pd.bdate_range(start, periods=n_days)
    n = n_tickers * n_days
    realized = outcome_rng.standard_normal(n) * 0.02
    forecast = signal_strength * realized + np.sqrt(max(1 - signal_strength**2, 0)) * rng.standard_normal(n) * 0.02
    return pd.DataFrame({
        "ticker": np.tile([f"T{j:02d}" for j in range(n_tickers)], n_days),
        "date": np.repeat(dates, n_tickers),
        "fold": np.repeat(np.arange(n_days) // (n_days // 2), n_tickers).clip(max=1),
        "expected_return": forecast,
        "prob_up": 1 / (1 + np.exp(-forecast * 100)),
        "confidence": np.abs(2 / (1 + np.exp(-forecast * 100)) - 1),
        "adj_close": 50.0,
        "realized": realized,
        "next_return": realized / 5,
        "momentum_20": outcome_rng.standard_normal(n) * 0.01,
        "reversal_5": outcome_rng.standard_normal(n) * 0.01,
    })


def tiny_ensemble(seed: int = 0) -> EnsembleLearner:
    rng = np.random.default_rng(seed)
    learner = EnsembleLearner(members=["a", "b"])
    learner.fit_from_oof({"a": rng.standard_normal(50), "b": rng.standard_normal(50)}, rng.standard_normal(50),
                         horizon=5)
    return learner


def register(learner=None, *, name="ensemble", data_hash="h1", target="fwd_ret_5", fsv=None, oof=None,
             hyperparameters=None, train_end=None, **kw) -> ModelVersion:
    learner = learner or tiny_ensemble()
    return services.register_version(
        model_name=name, learner=learner, feature_set_version=fsv, feature_columns=["a", "b"], target=target,
        horizon=5, metrics={"rank_ic": 0.0}, baselines={}, hyperparameters=hyperparameters,
        training_data_hash=data_hash, oof=oof, train_end=train_end, **kw,
    )


# --------------------------------------------------------------------------------------------------
# semantic versions


def test_semver_major_minor_patch():
    fs = FeatureSet.objects.create(name="default")
    v1 = FeatureSetVersion.objects.create(feature_set=fs, version="1.0.0", features=[], content_hash="a")
    v2 = FeatureSetVersion.objects.create(feature_set=fs, version="2.0.0", features=[], content_hash="b")

    first = register(fsv=v1)
    assert (first.version, first.status, first.parent) == ("1.0.0", "staging", None)
    assert first.model_type == "ensemble" and first.git_commit and len(first.git_commit) == 40
    assert {"numpy", "pandas", "xgboost", "torch", "prophet", "talib", "django"} <= set(first.library_versions)
    assert register(fsv=v1).version == "1.0.1"  # re-run on the same data: patch
    rerun_new_data = register(fsv=v1, data_hash="h2")
    assert rerun_new_data.version == "1.1.0"  # new data: minor
    assert rerun_new_data.parent.version == "1.0.1"  # lineage: the previous version
    assert register(fsv=v1, data_hash="h2", hyperparameters={"ridge_alpha": 1.0}).version == "1.2.0"
    assert register(fsv=v2, data_hash="h2").version == "2.0.0"  # feature set version: major
    assert register(fsv=v2, data_hash="h2", target="fwd_ret_1").version == "3.0.0"  # target: major
    xgb = build_learner("xgboost_classifier", {"n_estimators": 2, "max_depth": 2})
    xgb.fit(synthetic_frame(5, 60), feature_columns=FEATURES, horizon=5)
    changed_type = register(xgb, fsv=v2, data_hash="h2", target="fwd_ret_1")
    assert (changed_type.version, changed_type.model_type) == ("4.0.0", "tree_ensemble")  # model type: major
    events = DeploymentEvent.objects.filter(version__model__name="ensemble", action="register")
    assert events.count() == 7
    assert "patch: re-run on the same data" in events.get(version__version="1.0.1").reason


# --------------------------------------------------------------------------------------------------
# artifacts


def test_artifact_written_atomically_with_sha256(models_path):
    version = register()
    path = models_path / "ensemble" / f"{version.pk}.bin"
    assert version.artifact_path == f"ensemble/{version.pk}.bin"
    data = path.read_bytes()
    assert version.artifact_sha256 == artifacts.sha256_bytes(data) and version.artifact_bytes == len(data)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind
    # a failing rename leaves the previous file intact and no temp file
    original = os.replace

    def broken(src, dst):
        raise OSError("disk full")

    os.replace = broken
    try:
        with pytest.raises(OSError, match="disk full"):
            artifacts.write_atomic(root=models_path, relpath=version.artifact_path, data=b"garbage")
    finally:
        os.replace = original
    assert path.read_bytes() == data
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_paths_derive_from_ids_only(models_path):
    for bad in ("../etc", "Ensemble", "a/b", "", "x" * 101):
        with pytest.raises(ValueError):
            artifacts.relative_path(model_name=bad, version_id=1)
    with pytest.raises(ValueError):
        artifacts.relative_path(model_name="ok", version_id="1")
    with pytest.raises(ValueError, match="escapes"):
        artifacts.resolve(models_path, "../outside.bin")


def test_one_changed_byte_fails_naming_the_version(models_path):
    version = register()
    path = models_path / version.artifact_path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError) as err:
        load_version(version=version)
    message = str(err.value)
    assert "ensemble@1.0.0" in message and "sha256 mismatch" in message and "modified" in message


def test_truncated_and_missing_files_are_refused(models_path):
    version = register()
    path = models_path / version.artifact_path
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactIntegrityError, match=r"ensemble@1\.0\.0.*truncated or replaced"):
        load_version(version=version)
    path.unlink()
    with pytest.raises(ArtifactIntegrityError) as err:
        load_version(version=version)
    assert "ensemble@1.0.0" in str(err.value) and "FileNotFoundError" in str(err.value)
    assert "missing" in str(err.value) and "retrain" in str(err.value)


@pytest.mark.slow
def test_save_load_predict_round_trip_for_every_learner():
    frame = synthetic_frame(6, 140)
    configs = {
        "xgboost_classifier": {"n_estimators": 5, "max_depth": 2},
        "lstm_predictor": {"features": 3, "sequence_length": 5, "hidden_size": 4, "epochs": 1, "device": "cpu"},
        "prophet_forecaster": {"history_days": 60, "uncertainty_samples": 20},
    }
    for name, config in configs.items():
        learner = build_learner(name, config)
        learner.fit(frame, feature_columns=FEATURES, horizon=5)
        version = register(learner, name=name)
        loaded = load_version(version=version)
        before, after = learner.predict(frame), loaded.predict(frame)
        np.testing.assert_array_equal(before.expected_return, after.expected_return, err_msg=name)
        np.testing.assert_array_equal(before.prob_up, after.prob_up, err_msg=name)
    ensemble = tiny_ensemble()
    version = register(ensemble)
    stacked = pd.DataFrame({"a": np.linspace(-1, 1, 20), "b": np.linspace(1, -1, 20), "ticker": "T", "date": 0})
    np.testing.assert_array_equal(ensemble.predict(stacked).expected_return,
                                  load_version(version=version).predict(stacked).expected_return)


def test_oof_table_round_trip():
    table = oof_for(0.2, seed=1)
    back = artifacts.oof_from_bytes(artifacts.oof_to_bytes(table))
    pd.testing.assert_frame_equal(back[table.columns.tolist()], table.assign(fold=table["fold"].astype(np.int64)),
                                  check_dtype=False)


# --------------------------------------------------------------------------------------------------
# the promotion gate, rollback, history


def test_skill_confidence_is_a_probability():
    strong = skill_confidence(daily_skill(oof_for(0.3, seed=2), metric="rank_ic", horizon=5)[0], overlap=5)
    noise = skill_confidence(daily_skill(oof_for(0.0, seed=3), metric="rank_ic", horizon=5)[0], overlap=5)
    assert strong["confidence"] > 0.99 and 0.0 <= noise["confidence"] < 0.95


def test_gate_accepts_better_rejects_worse_and_rollback_is_one_action():
    actor = "tester"
    noise = register(oof=oof_for(0.0, seed=3), data_hash="n")
    decision = services.promote(version=noise, actor=actor)
    noise.refresh_from_db()
    assert not decision.passed and noise.status == "staging"
    assert "MODEL_PERFORMANCE_THRESHOLD 0.75" in noise.status_reason and "skill confidence" in noise.status_reason
    assert noise.gate["passed"] is False

    good = register(oof=oof_for(0.15, seed=4), data_hash="g")
    assert services.promote(version=good, actor=actor).passed
    good.refresh_from_db()
    assert good.status == "active" and good.activated_at is not None

    weaker = register(oof=oof_for(0.08, seed=5), data_hash="w")
    decision = services.promote(version=weaker, actor=actor, reason="nightly")
    weaker.refresh_from_db()
    assert not decision.passed and weaker.status == "staging"
    assert f"does not beat {decision.active_value:.4g}" in weaker.status_reason
    assert "ensemble@1.1.0" in weaker.status_reason and "same out-of-sample window" in weaker.status_reason
    assert decision.window["method"] == "common_oof" and decision.window["dates"] == 120

    better = register(oof=oof_for(0.3, seed=6), data_hash="b")
    decision = services.promote(version=better, actor=actor)
    assert decision.passed and decision.new_value > decision.active_value
    better.refresh_from_db()
    good.refresh_from_db()
    assert (better.status, good.status) == ("active", "deprecated")
    assert better.previous_active == good
    assert ModelVersion.objects.filter(model__name="ensemble", status="active").count() == 1

    restored = services.rollback(model_name="ensemble", actor=actor, reason="bad live numbers")
    better.refresh_from_db()
    assert restored == good and (better.status, ModelVersion.objects.get(pk=good.pk).status) == ("deprecated",
                                                                                                    "active")
    with pytest.raises(services.RegistryError, match="no previous active version"):
        services.rollback(model_name="ensemble", actor=actor)

    history = [(e.version.version, e.action, e.from_status, e.to_status)
               for e in DeploymentEvent.objects.filter(version__model__name="ensemble").order_by("id")]
    assert history == [
        ("1.0.0", "register", "", "staging"),
        ("1.0.0", "gate_rejected", "staging", "staging"),
        ("1.1.0", "register", "", "staging"),
        ("1.1.0", "promote", "staging", "active"),
        ("1.2.0", "register", "", "staging"),
        ("1.2.0", "gate_rejected", "staging", "staging"),
        ("1.3.0", "register", "", "staging"),
        ("1.1.0", "deprecate", "active", "deprecated"),
        ("1.3.0", "promote", "staging", "active"),
        ("1.3.0", "rollback", "active", "deprecated"),
        ("1.1.0", "rollback", "deprecated", "active"),
    ]
    last = DeploymentEvent.objects.filter(action="rollback").order_by("id").last()
    assert last.actor == actor and "bad live numbers" in last.reason


def test_force_deprecate_archive_and_their_guards():
    weak = register(oof=oof_for(0.0, seed=7), data_hash="x")
    decision = services.promote(version=weak, actor="ops", reason="incident 42", force=True)
    weak.refresh_from_db()
    assert decision.passed and decision.forced and weak.status == "active"
    assert "past the gate by ops (incident 42)" in weak.status_reason and "the gate said" in weak.status_reason
    with pytest.raises(services.RegistryError, match="already active"):
        services.promote(version=weak, actor="ops")
    with pytest.raises(services.RegistryError, match="roll back or deprecate"):
        services.archive(version=weak, actor="ops")
    services.deprecate(version=weak, actor="ops", reason="retired")
    services.archive(version=weak, actor="ops", reason="cleanup")
    assert ModelVersion.objects.get(pk=weak.pk).status == "archived"
    with pytest.raises(services.RegistryError, match="archived"):
        services.promote(version=weak, actor="ops")
    actions = list(DeploymentEvent.objects.filter(version=weak).order_by("id").values_list("action", "actor"))
    assert actions == [("register", "pipeline"), ("promote", "ops"), ("deprecate", "ops"), ("archive", "ops")]


def test_without_trustworthy_oof_only_force_promotes(models_path):
    version = register(oof=None)
    decision = services.promote(version=version, actor="t")
    assert not decision.passed and "no stored out-of-sample predictions" in decision.reason
    tampered = register(oof=oof_for(0.3, seed=6), data_hash="t")
    path = models_path / tampered.oof_path
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    decision = services.promote(version=tampered, actor="t")
    assert not decision.passed and "cannot be trusted" in decision.reason and "ensemble@1.1.0" in decision.reason
    assert ModelVersion.objects.get(pk=tampered.pk).status == "staging"


def test_gate_replays_the_active_version_when_windows_do_not_overlap(monkeypatch):
    frame = synthetic_frame(30, 400, seed=9, start="2016-01-04")
    dates = np.sort(frame["date"].unique())
    xgb = build_learner("xgboost_classifier", {"n_estimators": 20, "max_depth": 2})
    train = frame[frame["date"] <= dates[150]]
    xgb.fit(train, feature_columns=FEATURES, horizon=5)
    # the active version's own out-of-sample window is early; the new one's is 200 days later
    old_oof = oof_for(0.2, seed=10, n_tickers=30, n_days=40, start=str(pd.Timestamp(dates[160]).date()))
    active = register(xgb, name="xgboost_classifier", oof=old_oof, train_end=pd.Timestamp(dates[150]).date())
    services.promote(version=active, actor="t", force=True)

    window = frame[frame["date"] >= dates[300]].dropna(subset=["fwd_ret_5"])
    new_oof = pd.DataFrame({
        "ticker": window["ticker"], "date": window["date"], "fold": 0,
        "expected_return": window["fwd_ret_5"] * 0.5 + window["f1"] * 0.001,  # a clairvoyant new model
        "prob_up": 0.5, "confidence": 0.0, "adj_close": window["adj_close"], "realized": window["fwd_ret_5"],
        "next_return": window["fwd_ret_1"], "momentum_20": 0.0, "reversal_5": 0.0,
    })
    new = register(xgb, name="xgboost_classifier", oof=new_oof, data_hash="later")
    calls = {}

    def fake_loader(**kw):
        calls.update(kw)
        return training_selectors.TrainingData(frame=frame, feature_columns=FEATURES, feature_set_version=None)

    # the gate reads the replay rows through the loader training installed (registry.loaders)
    monkeypatch.setattr(loaders, "_installed", dataclasses.replace(loaders.installed(), load_training_frame=fake_loader))
    decision = services.promote(version=new, actor="t")
    assert decision.window["method"] == "replay_active" and decision.passed, decision.reason
    assert calls["feature_set_version"] is None and len(calls["tickers"]) == 30
    assert pd.Timestamp(decision.window["start"]) > pd.Timestamp(dates[155])  # only rows the active never saw
    assert np.isfinite(decision.active_value) and decision.new_value > decision.active_value


def test_commands_promote_rollback_and_errors():
    register(oof=oof_for(0.15, seed=4), data_hash="a")
    register(oof=oof_for(0.3, seed=6), data_hash="b")
    out = io.StringIO()
    call_command("promote", "ensemble", "1.0.0", "--reason", "first", stdout=out)
    assert "passed the gate" in out.getvalue()
    call_command("promote", "ensemble", "1.1.0", stdout=io.StringIO())
    assert get_version(model_name="ensemble").version == "1.1.0"
    out = io.StringIO()
    call_command("rollback", "ensemble", "--reason", "test", stdout=out)
    assert "ensemble@1.0.0 is active again" in out.getvalue()
    with pytest.raises(CommandError, match="no version 9.9.9"):
        call_command("promote", "ensemble", "9.9.9", stdout=io.StringIO())
    register(oof=oof_for(0.0, seed=3), data_hash="noise")
    with pytest.raises(CommandError, match=r"ensemble@1\.2\.0 was not promoted \(it stays staging\)"):
        call_command("promote", "ensemble", "1.2.0", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no active version"):
        call_command("rollback", "lstm_predictor", stdout=io.StringIO())


def test_export_registry_writes_a_fixture_that_loaddata_restores(settings, tmp_path):
    settings.ML_REGISTRY_PATH = tmp_path / "ml_registry"
    register(oof=oof_for(0.15, seed=4), data_hash="a")
    call_command("promote", "ensemble", "1.0.0", stdout=io.StringIO())
    out = io.StringIO()
    call_command("export_registry", "--json", stdout=out)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    exported = Path(summary["path"])
    assert exported.parent == settings.ML_REGISTRY_PATH and exported.name.startswith("registry-")
    assert summary["models"] == 1 and summary["versions"] == 1 and summary["events"] == DeploymentEvent.objects.count()
    assert not [p for p in exported.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically
    version = ModelVersion.objects.get()
    expected = (version.artifact_sha256, version.status, version.gate["passed"])
    ModelVersion.objects.all().delete()
    call_command("loaddata", str(exported), stdout=io.StringIO())
    restored = ModelVersion.objects.get()
    assert (restored.artifact_sha256, restored.status, restored.gate["passed"]) == expected
    assert load_version(version=restored) is not None  # the rows point at the same verified artifact


def test_admin_actions_record_the_user(admin_client, admin_user):
    version = register(oof=oof_for(0.15, seed=4))
    url = "/admin/registry/modelversion/"
    response = admin_client.post(url, {"action": "promote_versions", "_selected_action": [version.pk]})
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == "active"
    event = DeploymentEvent.objects.filter(version=version, action="promote").get()
    assert event.actor.startswith(admin_user.username)
    admin_client.post(url, {"action": "deprecate_versions", "_selected_action": [version.pk]})
    admin_client.post(url, {"action": "archive_versions", "_selected_action": [version.pk]})
    assert ModelVersion.objects.get(pk=version.pk).status == "archived"
    page = admin_client.get(f"{url}{version.pk}/change/")
    assert page.status_code == 200 and b"deprecate" in page.content and b"rank_ic" in page.content
    assert admin_client.get(url).status_code == 200
    # the final fit's feature importance, as the training service stores it
    version.evaluation = {**version.evaluation, "final_fit": {"importance": {
        "gain": {"a": 1.0, "b": 3.0}, "permutation": {"b": 0.0213}}}}
    version.save(update_fields=["evaluation"])
    html = admin_client.get(f"{url}{version.pk}/change/").content.decode()
    assert "feature importance" in html.lower() and "75.0%" in html and "0.0213" in html


def test_registry_tree_has_no_pickle():
    root = Path(__file__).resolve().parents[2]
    for rel in ("registry/artifacts.py", "registry/services.py", "registry/selectors.py", "training/services.py",
                "training/fitting.py", "training/prophet_chunks.py", "training/stacking.py", "training/tasks.py"):
        text = (root / rel).read_text()
        for forbidden in ("import pickle", "pickle.load", "cloudpickle", "dill", "joblib", "torch.load",
                          "allow_pickle=True"):
            assert forbidden not in text, (rel, forbidden)
