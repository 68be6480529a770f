"""Inference services (the write and compute side): predictions, model load/unload, retrain requests
and the daily batch prediction of the universe.

What ``prediction`` means: the model forecasts the simple return over ``horizon_days`` trading days
(``expected_return``). When a reference price is known, ``prediction`` is the forecast price
``reference_price * (1 + expected_return)`` (``prediction_type: "price"``): for a ticker the
reference is the adjusted close of the feature date; with a feature vector the client may send
``reference_price``. Otherwise ``prediction`` is the expected return itself
(``prediction_type: "return"``). ``direction`` is the sign of the expected return (``up``,
``down``, ``flat``) and agrees with ``prob_up`` for every learner; ``confidence`` is
``|2 * prob_up - 1|``.

Recommendations (``batch_predict``), per model version and date, over the tickers with a forecast:
rank 1 = highest expected return; ``BUY`` when in the top ``ML_RECOMMENDATION_BUY_FRACTION`` (20%)
and ``prob_up > 0.5``; ``SELL`` when in the bottom ``ML_RECOMMENDATION_SELL_FRACTION`` (20%) and
``prob_up < 0.5``; otherwise ``HOLD``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from features.models import Ticker
from features.selectors import feature_store_for, training_frame
from inference import cache as prediction_cache
from inference import compliance, conf, intraday, prediction_log
from inference.exceptions import InvalidInput, ModelUnavailable, NotFound, PayloadTooLarge
from inference.inputs import OfflineSource, OnlineSource, VectorSource, feature_set_version, lookback_days
from inference.model_manager import ENSEMBLE, SEQUENCE, TICKER, ServedModel, get_manager
from inference.models import DailyPrediction
from inference.records_chain import Entry, canonical_output
from inference.scoring import score
from training.orchestrator.errors import PipelineError
from training.orchestrator.triggers import request_retrain as orchestrate

logger = logging.getLogger(__name__)

TICKER_RE = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,15}$")

_KIND_HELP = {
    TICKER: "forecasts from a ticker's own price history, not from a feature vector",
    ENSEMBLE: "combines its members' forecasts, which need a ticker (the LSTM's sequence, Prophet's prices)",
}


# --------------------------------------------------------------------------------------------------
# input checks the serializers cannot do (they depend on the model)


def normalize_ticker(value: str, *, field: str) -> str:
    symbol = value.strip().upper()
    if not TICKER_RE.match(symbol):
        raise InvalidInput(
            f"{value!r} is not a ticker symbol (1-16 letters, digits, '.' or '-')", field=field
        )
    return symbol


def _check_vectors(served: ServedModel, vectors: list[list[float]], *, field: str, batch: bool) -> np.ndarray:
    if not served.accepts_vectors:
        raise InvalidInput(
            f"{served.name} {_KIND_HELP[served.kind]}: send "
            + ('"instances" as ticker symbols' if batch else '{"ticker": "AAPL"}')
            + " instead of feature vectors",
            field=field,
        )
    expected = len(served.feature_columns)
    for i, vector in enumerate(vectors):
        if len(vector) != expected:
            where = f"{field}[{i}]" if batch else field
            preview = ", ".join(served.feature_columns[:5])
            raise InvalidInput(
                f"expected {expected} values for {served.label} (its feature columns, in order: {preview}, ...), "
                f"got {len(vector)}",
                field=where,
            )
    x = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), expected)
    if not np.isfinite(x).all():  # the serializer rejects them first; this guards direct callers
        raise InvalidInput("every value must be a finite number", field=field)
    return x


def _direction(expected_return: float) -> str:
    if expected_return > 0:
        return "up"
    if expected_return < 0:
        return "down"
    return "flat"


# --------------------------------------------------------------------------------------------------
# serving


def _serve(
    served: ServedModel,
    source: Any,
    hashes: list[str],
    *,
    field: str,
    reference_prices: list[float | None],
    feature_dates: list[date | None],
    started: float,
    use_cache: bool = True,
    requester: Any = None,
    timing: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Cached outputs where present, one model call for the rest, one log row per prediction (and,
    for a ticker, its compliance record, when the log is written). ``requester``: the API user;
    ``timing``: a ticker request's ``as_of`` and ``intraday`` (``intraday.Plan.fields``)."""
    manager = get_manager()
    cached = prediction_cache.get_many(served.version_id, hashes) if use_cache else {}
    missing = [i for i, h in enumerate(hashes) if h not in cached]
    fresh: dict[str, tuple[float, float, float]] = {}
    if missing:
        er, prob, confidence = score(served, source, manager=manager)
        for i in missing:
            fresh[hashes[i]] = (float(er[i]), float(prob[i]), float(confidence[i]))
        unscored = [i for i in missing if not math.isfinite(fresh[hashes[i]][0])]
        if unscored:
            i = unscored[0]
            where = field if field == "ticker" else f"{field}[{i}]"
            name = source.tickers[i]
            raise NotFound(f"{served.label} has no forecast for ticker {name!r} (it was not trained on it)",
                           field=where)
        if use_cache:
            prediction_cache.set_many(served.version_id, {h: v for h, v in fresh.items()
                                                          if all(math.isfinite(x) for x in v)})
    now = timezone.now()
    latency_ms = (time.perf_counter() - started) * 1000.0
    slow_ms = conf.slow_prediction_ms()
    if latency_ms > slow_ms:  # the spec's troubleshooting line ("High API Latency")
        logger.warning("Prediction latency exceeded %.0fms: %s took %.0f ms for %d row(s)", slow_ms, served.label,
                       latency_ms, len(hashes))
    per_row_ms = latency_ms / max(len(hashes), 1)
    requester_id = getattr(requester, "pk", None) if getattr(requester, "is_authenticated", False) else None
    out = []
    log_rows = []
    for i, h in enumerate(hashes):
        er, prob, confidence = cached.get(h) or fresh[h]
        price = reference_prices[i]
        has_price = price is not None and math.isfinite(price) and price > 0
        prediction = price * (1.0 + er) if has_price else er
        ticker = source.tickers[i] if isinstance(source, OnlineSource) else ""
        shown = {
            "prediction": prediction,
            "prediction_type": "price" if has_price else "return",
            "expected_return": er,
            "prob_up": prob,
            "confidence": confidence,
            "direction": _direction(er),
            "reference_price": price if has_price else None,
            "ticker": ticker or None,
            "feature_date": feature_dates[i],
            "cached": h in cached,
        }
        out.append(shown)
        log_rows.append({
            "model_name": served.name,
            "model_version_id": served.version_id,
            "input_hash": h,
            "prediction": prediction,
            "expected_return": er,
            "confidence": confidence,
            "latency_ms": per_row_ms,
            "cached": h in cached,
            "created_at": now,
            "ticker": ticker,
            "feature_date": feature_dates[i],
            "requester_id": requester_id,
            "model_version": served.version,
            "prob_up": prob,
            "prediction_type": shown["prediction_type"],
            "horizon_days": served.horizon_days,
            # not prediction-log columns: kept in the compliance record, as the response showed them
            "reference_price": shown["reference_price"],
            "direction": shown["direction"],
            **({"as_of": timing["as_of"], "intraday": timing["intraday"]} if timing else {}),
        })
    prediction_log.record_many(log_rows)
    return out


def _ticker_request(served: ServedModel, tickers: list[str], *, field: str) -> tuple[OnlineSource, list[str],
                                                                                       list[date | None],
                                                                                       list[float | None]]:
    source = OnlineSource(tickers, field=field)  # no frame yet: a cached answer needs only dates and prices
    fsv_id = served.feature_set_version_id
    dates = source.feature_dates(fsv_id)
    prices = source.reference_prices(fsv_id)
    hashes = [
        prediction_cache.ticker_hash(ticker=t, feature_date=d.isoformat(), feature_set_version_id=fsv_id)
        for t, d in zip(tickers, dates, strict=True)
    ]
    return source, hashes, dates, prices


def predict(
    *,
    model_name: str,
    features: list[float] | None = None,
    ticker: str | None = None,
    reference_price: float | None = None,
    requester: Any = None,
) -> dict[str, Any]:
    """One prediction, from a feature vector or from a ticker's latest features (during a session,
    those of its "today so far" bar when fresh: ``inference.intraday``; ``as_of``, ``intraday`` and
    ``intraday_reason`` say which). ``requester``: the API user (kept, as a pseudonym, in the
    prediction log and the compliance records)."""
    started = time.perf_counter()
    if (features is None) == (ticker is None):
        raise InvalidInput('send exactly one of "features" (a feature vector) or "ticker"', field="features")
    served = get_manager().get(model_name)
    if features is not None:
        x = _check_vectors(served, [features], field="features", batch=False)
        source = VectorSource(x, served.feature_columns, reference_prices=[reference_price])
        hashes = [prediction_cache.vector_hash(x[0])]
        rows = _serve(served, source, hashes, field="features", reference_prices=[reference_price],
                      feature_dates=[None], started=started, requester=requester)
        timing = {"as_of": None, "intraday": False, "intraday_reason": intraday.FEATURE_VECTOR}
    else:
        symbol = normalize_ticker(ticker, field="ticker")
        source, hashes, dates, prices = _ticker_request(served, [symbol], field="ticker")
        # during a session, the features of the ticker's "today so far" bar (inference.intraday)
        plan = intraday.plan_for(served=served, ticker=symbol, source=source, feature_date=dates[0])
        if plan.intraday:
            source, hashes, dates, prices = plan.source, [plan.input_hash], [plan.session], [plan.reference_price]
        timing = plan.fields()
        rows = _serve(served, source, hashes, field="ticker", reference_prices=prices, feature_dates=dates,
                      started=started, requester=requester, timing=timing)
    return {
        **rows[0],
        "model_name": served.name,
        "model_version": served.version,
        "horizon_days": served.horizon_days,
        "timestamp": timezone.now(),
        **timing,
    }


def predict_batch(*, model_name: str, instances: Sequence[Any], requester: Any = None) -> dict[str, Any]:
    """Many predictions in one vectorized model call: ``instances`` are all feature vectors or all
    ticker symbols."""
    started = time.perf_counter()
    limit = conf.max_batch_size()
    if len(instances) > limit:
        raise PayloadTooLarge(
            f"{len(instances)} instances is more than ML_MAX_BATCH_SIZE={limit}; split the batch", field="instances"
        )
    if not instances:
        raise InvalidInput("send at least one instance", field="instances")
    are_tickers = [isinstance(item, str) for item in instances]
    if any(are_tickers) and not all(are_tickers):
        first = are_tickers.index(not are_tickers[0])
        raise InvalidInput(
            "mix of feature vectors and ticker symbols; send one kind per request", field=f"instances[{first}]"
        )
    served = get_manager().get(model_name)
    if are_tickers[0]:
        symbols = [normalize_ticker(t, field=f"instances[{i}]") for i, t in enumerate(instances)]
        source, hashes, dates, prices = _ticker_request(served, symbols, field="instances")
        rows = _serve(served, source, hashes, field="instances", reference_prices=prices, feature_dates=dates,
                      started=started, requester=requester)
    else:
        x = _check_vectors(served, list(instances), field="instances", batch=True)
        source = VectorSource(x, served.feature_columns, reference_prices=[None] * len(x))
        hashes = [prediction_cache.vector_hash(row) for row in x]
        # Bulk vectors rarely repeat, and writing a cache entry each costs more than the model call
        # (1,000 entries ~150 ms on the disk cache, xgboost on 1,000 rows ~2 ms): opt in with
        # ML_PREDICTION_CACHE_VECTOR_BATCHES.
        rows = _serve(served, source, hashes, field="instances", reference_prices=[None] * len(x),
                      feature_dates=[None] * len(x), started=started, use_cache=conf.cache_vector_batches(),
                      requester=requester)
    return {
        "model_name": served.name,
        "model_version": served.version,
        "horizon_days": served.horizon_days,
        "timestamp": timezone.now(),
        "count": len(rows),
        "cached": sum(1 for r in rows if r["cached"]),
        "predictions": rows,
    }


def flush_prediction_log() -> int:
    """Write the buffered prediction-log rows now (they are otherwise written in batches)."""
    return prediction_log.flush()


# --------------------------------------------------------------------------------------------------
# model management


def load_model(*, model_name: str) -> dict[str, Any]:
    served = get_manager().load(model_name)
    return {
        "message": f"Model {served.name} loaded",
        "model_name": served.name,
        "model_version": served.version,
        "loaded_at": served.loaded_at,
        "timestamp": timezone.now(),
    }


def unload_model(*, model_name: str) -> dict[str, Any]:
    dropped = get_manager().unload(model_name)
    return {
        "message": f"Model {model_name} unloaded",
        "model_name": model_name,
        "unloaded_versions": dropped,
        "timestamp": timezone.now(),
    }


def retrain_queue_from_api(*, requested_by: str, reason: str = "", tickers: Sequence[str] | None = None) -> dict[str, Any]:
    """Queue a pipeline run (fresh data, features, train, evaluate, promote, predict, drift) through the
    orchestrator, which records the trigger and folds a request into a run of the same scope that is
    already queued or running. Tickers must be in the universe (features.Ticker)."""
    symbols = sorted({normalize_ticker(t, field="tickers") for t in tickers or []})
    if symbols:
        known = set(Ticker.objects.filter(symbol__in=symbols).values_list("symbol", flat=True))
        unknown = [t for t in symbols if t not in known]
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
            raise InvalidInput(f"unknown ticker(s): {shown}; ingest their prices first", field="tickers")
    try:
        run = orchestrate(trigger="api", reason=reason, requested_by=requested_by, tickers=symbols or None)
    except PipelineError as exc:
        raise InvalidInput(str(exc), field="tickers") from exc
    return {
        "message": "Training task queued", "timestamp": timezone.now(), "run_id": run.pk,
        "status": run.status, "deduplicated": bool(getattr(run, "deduplicated", False)),
    }


# --------------------------------------------------------------------------------------------------
# daily batch prediction


def recommendations_for(expected_return: np.ndarray, prob_up: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Ranks (1 = highest expected return) and BUY/HOLD/SELL for rows with a finite forecast."""
    n = len(expected_return)
    order = np.argsort(-expected_return, kind="stable")
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(1, n + 1)
    n_buy = int(math.floor(n * conf.buy_fraction() + 0.5))  # the share of n, rounded half up
    n_sell = int(math.floor(n * conf.sell_fraction() + 0.5))
    labels = []
    for rank, prob in zip(ranks, prob_up, strict=True):
        if rank <= n_buy and prob > 0.5:
            labels.append("BUY")
        elif rank > n - n_sell and prob < 0.5:
            labels.append("SELL")
        else:
            labels.append("HOLD")
    return ranks, labels


def _fsv_ids(served: ServedModel, manager: Any) -> set[int | None]:
    ids = {served.feature_set_version_id}
    for version_id in served.members.values():
        ids |= _fsv_ids(manager.get_version(version_id), manager)
    return ids


def _max_length(served: ServedModel, manager: Any) -> int:
    length = 1
    if served.kind == SEQUENCE:
        length = int(getattr(served.learner, "params", {}).get("sequence_length", 1))
    for version_id in served.members.values():
        length = max(length, _max_length(manager.get_version(version_id), manager))
    return length


def _recommendation_entries(served: ServedModel, day: date, symbols: list[str], objs: list[Any]) -> list[Any]:
    """The compliance records of a day's recommendations (input: the ticker's features of ``day``)."""
    now = timezone.now()
    entries = []
    for symbol, obj in zip(symbols, objs, strict=True):
        output = {"date": day, "recommendation": obj.recommendation, "rank": obj.rank,
                  "expected_return": obj.expected_return, "prob_up": obj.prob_up, "confidence": obj.confidence,
                  "predicted_price": obj.predicted_price, "horizon_days": obj.horizon_days}
        entries.append(Entry(
            kind="recommendation", created_at=now, model_name=served.name, model_version=served.version,
            model_version_ref=served.version_id, ticker=symbol,
            input_hash=prediction_cache.ticker_hash(ticker=symbol, feature_date=day.isoformat(),
                                                    feature_set_version_id=served.feature_set_version_id),
            output=canonical_output(output), requester="system:batch_predict",
        ))
    return entries


def batch_predict(
    *,
    as_of: date | None = None,
    model_names: list[str] | None = None,
    tickers: list[str] | None = None,
) -> dict[str, Any]:
    """Predict the universe with each active model and store ``DailyPrediction`` rows.

    ``as_of`` is the feature date (default: the latest date in the offline store); the universe is
    every ticker with features on that date (or ``tickers``). Rows are upserted per (date, ticker,
    model version) with rank and recommendation (see the module docstring). Each recommendation is
    also appended to the compliance records (``inference.compliance``), in the same transaction.
    """
    started = time.perf_counter()
    manager = get_manager()
    manager.refresh(force=True)
    status = manager.status()["models"]
    names = model_names or [n for n, m in status.items() if m["active"] is not None]
    result: dict[str, Any] = {"date": None, "tickers": 0, "models": {}, "errors": {}, "preferred_model": None}
    served_models: dict[str, ServedModel] = {}
    for name in names:
        try:
            served_models[name] = manager.get(name)
        except (ModelUnavailable, NotFound) as exc:
            result["errors"][name] = exc.message
    if not served_models:
        result["seconds"] = time.perf_counter() - started
        return result

    fsv_ids: set[int | None] = set()
    length = 1
    for served in served_models.values():
        fsv_ids |= _fsv_ids(served, manager)
        length = max(length, _max_length(served, manager))
    versions = {fid: feature_set_version(fid) for fid in fsv_ids}
    primary = next(iter(served_models.values())).feature_set_version_id
    wanted = sorted({t.strip().upper() for t in tickers}) if tickers else None
    last_dates = feature_store_for(version=versions[primary]).last_dates()
    if wanted is not None:
        last_dates = {t: d for t, d in last_dates.items() if t in set(wanted)}
    if not last_dates:
        result["errors"]["features"] = "no stored features for the requested tickers (run build_features)"
        result["seconds"] = time.perf_counter() - started
        return result
    day = as_of or max(last_dates.values())
    start = day - timedelta(days=lookback_days(length))
    frames = {
        fid: training_frame(feature_set_version=version, start=start, end=day, tickers=wanted, horizons=(1,))
        for fid, version in versions.items()
    }
    base = frames[primary]
    universe = sorted(set(base.loc[base["date"].to_numpy() == np.datetime64(day, "ns"), "ticker"]))
    result["date"] = day.isoformat()
    result["tickers"] = len(universe)
    if not universe:
        result["errors"]["features"] = f"no tickers have features on {day.isoformat()}"
        result["seconds"] = time.perf_counter() - started
        return result
    source = OfflineSource(as_of=day, tickers=universe, frames=frames)
    prices = source.latest(primary, [])["adj_close"].to_numpy(dtype=np.float64)
    ticker_ids = dict(Ticker.objects.filter(symbol__in=universe).values_list("symbol", "id"))

    scores: dict[int, Any] = {}  # version id -> arrays: the ensemble reuses its members' scores
    for name, served in served_models.items():
        try:
            er, prob, confidence = score(served, source, manager=manager, memo=scores)
        except (ModelUnavailable, NotFound, InvalidInput) as exc:
            result["errors"][name] = exc.message
            continue
        known = np.array([t in ticker_ids for t in universe], dtype=bool)
        keep = np.flatnonzero(np.isfinite(er) & np.isfinite(prob) & np.isfinite(prices) & known)
        ranks, labels = recommendations_for(er[keep], prob[keep])
        objs = [
            DailyPrediction(
                date=day,
                ticker_id=ticker_ids[universe[i]],
                model_version_id=served.version_id,
                horizon_days=served.horizon_days,
                expected_return=float(er[i]),
                prob_up=float(prob[i]),
                confidence=float(confidence[i]),
                predicted_price=float(prices[i] * (1.0 + er[i])),
                recommendation=labels[j],
                rank=int(ranks[j]),
            )
            for j, i in enumerate(keep)
        ]
        with transaction.atomic():
            DailyPrediction.objects.filter(date=day, model_version_id=served.version_id).exclude(
                ticker_id__in=[o.ticker_id for o in objs]
            ).delete()
            DailyPrediction.objects.bulk_create(
                objs,
                batch_size=1000,
                update_conflicts=True,
                unique_fields=["date", "ticker", "model_version"],
                update_fields=["horizon_days", "expected_return", "prob_up", "confidence", "predicted_price",
                               "recommendation", "rank"],
            )
            compliance.append_records(_recommendation_entries(served, day, [universe[i] for i in keep], objs))
        counts = {label: labels.count(label) for label in ("BUY", "HOLD", "SELL")}
        result["models"][name] = {
            "version": served.version,
            "version_id": served.version_id,
            "rows": len(objs),
            "skipped": len(universe) - len(objs),
            "buy": counts["BUY"],
            "hold": counts["HOLD"],
            "sell": counts["SELL"],
        }
    for name in conf.recommendation_models():
        if name in result["models"]:
            result["preferred_model"] = name
            break
    result["seconds"] = time.perf_counter() - started
    return result
