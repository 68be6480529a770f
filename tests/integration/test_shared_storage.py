"""ML_MODELS_PATH and ML_FEATURES_PATH on S3 (``features.storage``), against a real S3 server on
loopback (moto's standalone server, tests/s3server.py): the offline feature store commits, reads,
verifies and vacuums there as it does on disk, concurrent writers never lose a commit, model
artifacts are written, checksum-verified and loaded from memory, and nothing lands on local disk."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import engine, feature_sets, storage
from features.build import materialize
from features.store import FeatureStore
from features.synthetic import generate_market
from tests.integration.test_training import retrain_eagerly
from tests.unit.test_store import _chunks, _frames, _market


def _local_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# --- the storage module ------------------------------------------------------------------------


def test_settings_values_become_roots():
    assert storage.storage_root("s3://bucket/some/prefix/") == "s3://bucket/some/prefix"
    assert storage.storage_root("/srv/models") == Path("/srv/models")
    with pytest.raises(storage.StorageError, match="no bucket"):
        storage.storage_root("s3://")
    with pytest.raises(storage.StorageError, match="only local paths and s3://"):
        storage.storage_root("gs://bucket/x")
    assert storage.join("s3://b/p", "set", "1.0.0") == "s3://b/p/set/1.0.0"
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(ValueError, match="escapes"):
            storage.location("s3://b/p").path(bad)


def test_objects_pointer_and_lease_on_s3(s3_server, s3_bucket):
    loc = storage.location(f"s3://{s3_bucket}/root")
    assert loc.remote and loc.read_pointer("ptr") == (None, None)
    loc.write_bytes("a/x.bin", b"one")
    loc.write_bytes("a/y.bin", bytearray(b"two"))
    assert loc.read_bytes("a/x.bin") == b"one"
    assert loc.read_many(["a/x.bin", "a/y.bin"]) == {"a/x.bin": b"one", "a/y.bin": b"two"}
    assert [(f.relpath, f.size) for f in loc.files()] == [("a/x.bin", 3), ("a/y.bin", 3)]
    assert loc.total_bytes() == 6
    with pytest.raises(FileNotFoundError, match=f"s3://{s3_bucket}/root/a/nope.bin"):
        loc.read_bytes("a/nope.bin")
    loc.remove("a/y.bin")
    loc.remove("a/y.bin")  # missing: nothing to do
    assert s3_server.keys(s3_bucket) == ["root/a/x.bin"]

    # the commit pointer: replaced only if unchanged since it was read
    loc.write_pointer("ptr", b"v1", token=None)
    data, token = loc.read_pointer("ptr")
    assert data == b"v1"
    with pytest.raises(storage.CommitConflict, match="created by another writer"):
        loc.write_pointer("ptr", b"v1 again", token=None)
    loc.write_pointer("ptr", b"v2", token=token)
    with pytest.raises(storage.CommitConflict, match="replaced by another writer"):
        loc.write_pointer("ptr", b"lost update", token=token)  # the token of v1
    assert loc.read_pointer("ptr")[0] == b"v2"

    # the lease: one holder at a time; a second waits until the first releases it
    order: list[str] = []
    entered = threading.Event()

    def second() -> None:
        entered.wait()
        with loc.lock(".lock"):
            order.append("second in")

    thread = threading.Thread(target=second)
    thread.start()
    with loc.lock(".lock"):
        order.append("first in")
        entered.set()
        time.sleep(1.0)
        order.append("first out")
    thread.join(30)
    assert order == ["first in", "first out", "second in"]
    assert "root/.lock" not in s3_server.keys(s3_bucket)  # released

    # a killed holder's expired lease is taken over
    loc.write_bytes(".lock", json.dumps({"owner": "dead:1:x", "expires": time.time() - 1}).encode())
    with loc.lock(".lock"):
        assert b"dead" not in loc.read_bytes(".lock")


# --- the offline feature store on S3 ----------------------------------------------------------


def test_feature_store_on_s3_matches_the_local_store(s3_server, s3_bucket, tmp_path, monkeypatch):
    """A full build, then an incremental one, with per-date normalization (the xsection/ stats):
    the S3 store reads back exactly what the local store does."""
    monkeypatch.chdir(tmp_path)
    bars = generate_market(4, 2.5, 7)
    bars["ticker"] = bars["ticker"].astype(str)
    spec = feature_sets.FeatureSpec.from_params({**feature_sets.DEFAULT_SPEC.to_dict(), "cs_normalization": "robust_zscore"})
    cut = pd.Timestamp(np.sort(bars["date"].unique())[-25])
    old = bars[bars["date"] < cut]
    window = engine.select_lookback(bars, cut)
    window["ticker"] = window["ticker"].astype(str)
    local = FeatureStore(tmp_path / "local" / "v", cs_normalization="robust_zscore")
    remote = FeatureStore(f"s3://{s3_bucket}/features/set/1.0.0", cs_normalization="robust_zscore")
    assert remote.remote and remote.root == f"s3://{s3_bucket}/features/set/1.0.0"
    for store in (local, remote):
        ret, src = _market(old)
        materialize(store=store, chunks=_chunks(old), spec=spec, market_returns=ret, market_source=src,
                       incremental=False)
        since = {t: pd.Timestamp(d) + pd.Timedelta(days=1) for t, d in store.last_dates().items()}
        ret2, src2 = _market(window, stored=store.market())
        materialize(store=store, chunks=_chunks(window, since), spec=spec, market_returns=ret2,
                       market_source=src2, incremental=True)
    for dataset in ("features", "labels"):
        a, b = local.read(dataset), remote.read(dataset)
        assert len(a) > 1500
        pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(local.latest_rows(), remote.latest_rows())
    pd.testing.assert_series_equal(local.market(), remote.market())
    tickers = sorted(bars["ticker"].unique())
    sub = {"start": cut - pd.Timedelta(days=90), "end": cut, "tickers": tickers[1:3]}
    pd.testing.assert_frame_equal(local.read("features", **sub), remote.read("features", **sub))
    lm, rm = local.manifest(), remote.manifest()
    assert lm["generation"] == rm["generation"] == 2 and lm["last_dates"] == rm["last_dates"]
    assert {e["dataset"] for e in rm["files"].values()} == {"features", "labels", "xsection", "market"}

    # the manifest names exactly the objects stored (superseded ones deleted), every one verifies
    keys = {k.split("/1.0.0/", 1)[1] for k in s3_server.keys(s3_bucket)}
    assert keys == set(rm["files"]) | {"_manifest.json"}
    assert remote.verify() == []
    victim = sorted(rm["files"])[0]
    remote.location.write_bytes(victim, remote.location.read_bytes(victim)[:-3] + b"xyz")
    assert remote.verify() == [f"{victim}: checksum mismatch"]
    remote.location.remove(victim)
    assert remote.verify() == [f"{victim}: missing"]
    # nothing of the S3 store touched the working folder (only the local store's own files are here)
    assert all(p.startswith("local/") for p in _local_files(tmp_path))


def test_a_failed_commit_on_s3_leaves_the_store_as_it_was(s3_server, s3_bucket):
    feats, labels = _frames()
    store = FeatureStore(f"s3://{s3_bucket}/f/v")
    with store.writer(tag="m1") as w:
        w.write_parts(features=feats, labels=labels)
        w.commit()
    before = store.location.read_bytes("_manifest.json")
    objects = s3_server.keys(s3_bucket)
    with pytest.raises(RuntimeError, match="chunk 2 failed"):
        with store.writer(tag="m2") as w:
            w.write_parts(features=feats.assign(a=feats["a"] + 1), labels=labels)
            raise RuntimeError("chunk 2 failed")
    assert store.location.read_bytes("_manifest.json") == before
    assert s3_server.keys(s3_bucket) == objects  # the failed writer's parts are gone

    # a writer whose manifest is replaced after it read it (by a writer on another machine whose
    # lease it had taken over as expired) fails with CommitConflict and deletes what it wrote;
    # the other commit stands
    w = store.writer(tag="slow")
    w.upsert(features=feats.assign(a=feats["a"] * 2), labels=labels)
    real = store._manifest_and_token

    def read_then_another_machine_commits():
        manifest, token = real()
        other = dict(manifest, generation=manifest["generation"] + 1, updated_at="by the other machine")
        store.location.write_pointer("_manifest.json", json.dumps(other).encode(), token=token)
        return manifest, token

    store._manifest_and_token = read_then_another_machine_commits
    with pytest.raises(storage.CommitConflict, match="replaced by another writer"):
        w.commit()
    store._manifest_and_token = real
    assert store.manifest()["updated_at"] == "by the other machine"
    assert np.array_equal(store.read("features")["a"].to_numpy(), feats["a"].to_numpy())
    assert s3_server.keys(s3_bucket) == objects  # the loser's merged parts were deleted
    assert not store.location.exists(".lock")


def test_concurrent_writers_on_s3_lose_no_commit(s3_server, s3_bucket):
    """Chunk tasks of one build commit to one version at once (on several machines): the lease
    serializes them and every chunk's tickers are in the final manifest."""
    store_url = f"s3://{s3_bucket}/f/v"
    errors: list[BaseException] = []

    def chunk(i: int) -> None:
        try:
            feats, labels = _frames(n_tickers=2)
            feats["ticker"] = feats["ticker"] + f"_{i}"
            labels["ticker"] = labels["ticker"] + f"_{i}"
            with FeatureStore(store_url).writer(tag=f"c{i}") as w:
                w.upsert(features=feats, labels=labels)
                w.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=chunk, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    store = FeatureStore(store_url)
    assert store.manifest()["generation"] == 4
    assert sorted(store.last_dates()) == sorted(f"T{j}_{i}" for i in range(4) for j in range(2))
    assert store.read("features")["ticker"].nunique() == 8 and store.verify() == []


def test_vacuum_on_s3_removes_only_old_unreferenced_parts(s3_server, s3_bucket):
    feats, labels = _frames()
    store = FeatureStore(f"s3://{s3_bucket}/f/v")
    with store.writer() as w:
        w.write_parts(features=feats, labels=labels)
        w.commit()
    store.location.write_bytes("features/year=2020/month=01/part-dead.parquet", b"left by a killed writer")
    assert store.vacuum(min_age_s=3600) == 0  # too young: may be a running writer's
    assert store.vacuum(min_age_s=0) == 1
    assert not store.location.exists("features/year=2020/month=01/part-dead.parquet")
    assert store.verify() == [] and len(store.read("features")) == len(feats)


# --- model artifacts on S3 ------------------------------------------------------------------------


def test_artifacts_on_s3_are_written_once_and_verified_before_loading(s3_server, s3_bucket):
    from registry import artifacts

    root = f"s3://{s3_bucket}/models"
    data = os.urandom(4096)
    stored = artifacts.write_atomic(root=root, relpath="xgboost_classifier/7.bin", data=data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == 4096
    assert artifacts.read_verified(root=root, relpath=stored.relpath, sha256=stored.sha256, size=stored.size,
                                   label="xgboost_classifier@1.0.0") == data
    storage.location(root).write_bytes(stored.relpath, data[:-1] + b"!")
    with pytest.raises(artifacts.ArtifactIntegrityError, match="sha256 mismatch"):
        artifacts.read_verified(root=root, relpath=stored.relpath, sha256=stored.sha256, size=stored.size,
                                label="xgboost_classifier@1.0.0")
    artifacts.remove(root=root, relpath=stored.relpath)
    with pytest.raises(artifacts.ArtifactIntegrityError, match=f"s3://{s3_bucket}/models/xgboost_classifier/7.bin "
                                                               "is missing"):
        artifacts.read_verified(root=root, relpath=stored.relpath, sha256=stored.sha256, size=stored.size,
                                label="xgboost_classifier@1.0.0")
    with pytest.raises(artifacts.ArtifactIntegrityError, match="escapes"):
        artifacts.read_verified(root=root, relpath="../other/1.bin", sha256="ab", size=None, label="x@1")
    artifacts.remove_empty_folder(root=root, relpath="_runs/3")  # no folders on S3: nothing to do
    assert s3_server.keys(s3_bucket) == []


# --- Prophet's chunk outputs and the registry on S3, through the Celery chord (eager) -----------


@pytest.mark.django_db
def test_prophet_chunks_travel_through_s3_and_leave_nothing_behind(s3_server, s3_bucket, settings, tmp_path,
                                                                   monkeypatch):
    """The chord path with both roots on S3: the feature build writes the store there, every Prophet
    chunk leaves its model and table under ``_runs/<run>/`` as objects, the merge reads them back
    checksum-verified, registers the version (artifact and out-of-fold objects) and deletes the
    scratch objects; nothing is written under the working folder."""
    import csv
    import gzip
    import io
    import uuid

    from django.core.management import call_command

    from features.services.feature_store import build_features
    from registry import artifacts
    from registry.models import ModelVersion
    from registry.selectors import load_version
    from training import dispatch, services
    from training.models import TrainingRun

    monkeypatch.chdir(tmp_path)
    settings.ML_FEATURES_PATH = f"s3://{s3_bucket}/features"
    settings.ML_MODELS_PATH = f"s3://{s3_bucket}/ml_models"
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-s3-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    tickers = ["AAPL", "AMZN", "JNJ", "JPM", "MSFT", "XOM"]
    sample = Path(settings.BASE_DIR) / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
    bars = io.StringIO()
    with gzip.open(sample, "rt") as src:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(bars, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["ticker"] in tickers and row["date"] >= "2016-05-18")
    (tmp_path / "bars.csv").write_text(bars.getvalue())
    call_command("ingest_prices", str(tmp_path / "bars.csv"), stdout=io.StringIO(), stderr=io.StringIO())
    (tmp_path / "bars.csv").unlink()
    build_features(tickers=tickers)
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({
        "models": {"prophet_forecaster": {"history_days": 250, "uncertainty_samples": 30, "seed": 42}},
        "training": {"horizon_days": 5}})
    settings.ML_WALK_FORWARD_FOLDS, settings.ML_WALK_FORWARD_TEST_DAYS = 2, 40
    settings.ML_WALK_FORWARD_MIN_TRAIN_DAYS, settings.ML_WALK_FORWARD_GAP_DAYS = 150, None
    settings.ML_PROPHET_CHUNK_TICKERS = 3
    monkeypatch.setattr(dispatch, "retrain_send", lambda *, run_id: "task-s3")
    run = services.retrain(models=["prophet_forecaster"], sync=False)
    seen: list[list[str]] = []
    real_merge = services.merge_prophet_chunks

    def merge_and_look(**kwargs):  # what the bucket holds when the chunks are done
        seen.append([k for k in s3_server.keys(s3_bucket) if "/_runs/" in f"/{k}"])
        return real_merge(**kwargs)

    monkeypatch.setattr(services, "merge_prophet_chunks", merge_and_look)
    assert retrain_eagerly(run.pk).successful()
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == "succeeded", run.error + run.log
    assert sorted(seen[0]) == sorted(f"ml_models/_runs/{run.pk}/prophet_{chunk}{suffix}"
                                     for chunk in range(2) for suffix in (".bin", ".oof.npz")), seen
    version = ModelVersion.objects.get(model__name="prophet_forecaster")
    keys = s3_server.keys(s3_bucket)
    assert not [k for k in keys if "/_runs/" in f"/{k}"]  # scratch objects deleted after the merge
    assert {f"ml_models/{version.artifact_path}", f"ml_models/{version.oof_path}"} <= set(keys)
    assert load_version(version=version).name == "prophet_forecaster"  # verified, loaded from memory
    assert artifacts.read_verified(root=settings.ML_MODELS_PATH, relpath=version.oof_path,
                                   sha256=version.oof_sha256, size=version.oof_bytes, label=str(version))
    assert _local_files(tmp_path) == []
