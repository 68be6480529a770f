"""Request validation and response shapes of the inference API (thin: the services decide)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from inference.intraday import REASONS as INTRADAY_REASONS

MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,99}$"
TICKER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,15}$"
MAX_VECTOR_LENGTH = 10_000
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_TICKER_RE = re.compile(TICKER_PATTERN)
MODEL_NAME_INVALID = "not a model name (lowercase letters, digits and _)"
TICKER_INVALID = "not a ticker symbol (1-16 letters, digits, '.' or '-')"
MAX_REFERENCE_PRICE = 1e12

_NUMBER_SCHEMA = {"type": "number"}
_VECTOR_SCHEMA = {
    "type": "array",
    "items": _NUMBER_SCHEMA,
    "minItems": 1,
    "maxItems": MAX_VECTOR_LENGTH,
    "description": "Feature values in the model's feature-column order (GET /models gives the count).",
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value[:20]!r})"
    if value is None:
        return "null"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return type(value).__name__


def finite_number(value: Any) -> float | None:
    """``value`` as a float if it is a JSON number (not a boolean, not a string) and finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def vector_from(data: Any, *, where: str = "") -> list[float]:
    """A feature vector from JSON, or ``ValidationError`` naming the bad item (``item 3``)."""
    if not isinstance(data, list):
        raise serializers.ValidationError(f"{where}expected a list of numbers, got {_describe(data)}")
    if not data:
        raise serializers.ValidationError(f"{where}the feature vector is empty")
    if len(data) > MAX_VECTOR_LENGTH:
        raise serializers.ValidationError(f"{where}more than {MAX_VECTOR_LENGTH} values")
    if all(type(item) is float for item in data) and math.isfinite(sum(data)):
        return data  # the common case at once: a NaN or an infinity makes the sum non-finite (so may an
        # overflow of finite values, which the item-by-item check below then accepts)
    out = []
    for i, item in enumerate(data):
        number = finite_number(item)
        if number is None:
            raise serializers.ValidationError(
                f"{where}item {i} must be a finite number, got {_describe(item)}"
            )
        out.append(number)
    return out


def positive_number(data: Any) -> float:
    number = finite_number(data)
    if number is None:
        raise serializers.ValidationError(f"must be a finite number, got {_describe(data)}")
    if not 0 < number <= MAX_REFERENCE_PRICE:
        raise serializers.ValidationError(f"must be > 0 and <= {MAX_REFERENCE_PRICE:g}")
    return number


@extend_schema_field(_VECTOR_SCHEMA)
class FeatureVectorField(serializers.Field):
    def to_internal_value(self, data: Any) -> list[float]:
        return vector_from(data)

    def to_representation(self, value: Any) -> Any:  # pragma: no cover - request only
        return value


@extend_schema_field({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": MAX_REFERENCE_PRICE})
class PositiveNumberField(serializers.Field):
    def to_internal_value(self, data: Any) -> float:
        return positive_number(data)

    def to_representation(self, value: Any) -> Any:  # pragma: no cover - request only
        return value


def _matching(pattern: re.Pattern[str], *, max_length: int, invalid: str) -> Callable[[Any], str]:
    """The check of a string field, as DRF's RegexField makes it: a string (numbers and booleans are
    not coerced), trimmed, not blank, at most ``max_length`` characters, matching ``pattern``."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise serializers.ValidationError(f"must be a string, got {_describe(value)}")
        value = value.strip()
        if not value:
            raise serializers.ValidationError("This field may not be blank.")
        if len(value) > max_length:
            raise serializers.ValidationError(f"Ensure this field has no more than {max_length} characters.")
        if not pattern.search(value):
            raise serializers.ValidationError(invalid)
        return value

    return check


model_name_from = _matching(_MODEL_NAME_RE, max_length=100, invalid=MODEL_NAME_INVALID)
ticker_from = _matching(_TICKER_RE, max_length=16, invalid=TICKER_INVALID)


def instances_from(data: Any) -> list[Any]:
    """A batch's instances: feature vectors or ticker symbols (the service checks they are one kind)."""
    if not isinstance(data, list):
        raise serializers.ValidationError(f"expected a list, got {_describe(data)}")
    out: list[Any] = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            if not item.strip() or len(item) > 16:
                raise serializers.ValidationError(f"item {i}: {item[:20]!r} is not a ticker symbol")
            out.append(item)
        elif isinstance(item, list):
            out.append(vector_from(item, where=f"item {i}: "))
        else:
            raise serializers.ValidationError(
                f"item {i} must be a feature vector (list of numbers) or a ticker symbol, got {_describe(item)}"
            )
    return out


@extend_schema_field({
    "type": "array",
    "minItems": 1,
    "items": {
        "oneOf": [
            _VECTOR_SCHEMA,
            {"type": "string", "pattern": TICKER_PATTERN, "description": "A ticker symbol"},
        ]
    },
    "description": "Either feature vectors (one model call for all) or ticker symbols, not both; "
                   "at most ML_MAX_BATCH_SIZE (1000) items.",
})
class InstancesField(serializers.Field):
    def to_internal_value(self, data: Any) -> list[Any]:
        return instances_from(data)

    def to_representation(self, value: Any) -> Any:  # pragma: no cover - request only
        return value


class PatternField(serializers.RegexField):
    """A string field checked by ``check`` (one of the checks above, which the prediction requests
    use too); RegexField gives the schema its pattern and maximum length."""

    def __init__(self, check: Callable[[Any], str], pattern: str, **kwargs: Any) -> None:
        self.check = check
        super().__init__(pattern, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        return self.check(data)


def _model_name(**kwargs: Any) -> serializers.RegexField:
    return PatternField(model_name_from, MODEL_NAME_PATTERN, max_length=100,
                        help_text="lstm_predictor, xgboost_classifier, prophet_forecaster or ensemble", **kwargs)


def _ticker(**kwargs: Any) -> serializers.RegexField:
    return PatternField(ticker_from, TICKER_PATTERN, max_length=16, **kwargs)


# --------------------------------------------------------------------------------------------------
# requests


def _fields(data: Any, checks: dict[str, Callable[[Any], Any]], *, required: tuple[str, ...]) -> dict[str, Any]:
    """``data``'s fields through their checks, every bad or missing one named at once (as a DRF
    serializer reports them); other keys are ignored."""
    if not isinstance(data, dict):
        raise serializers.ValidationError(
            {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(data).__name__}."]}
        )
    errors: dict[str, list[str]] = {}
    out: dict[str, Any] = {}
    for name, check in checks.items():
        if name not in data:
            if name in required:
                errors[name] = ["This field is required."]
            continue
        try:
            out[name] = check(data[name])
        except serializers.ValidationError as exc:
            errors[name] = [str(m) for m in exc.detail]
    if errors:
        raise serializers.ValidationError(errors)
    return out


_PREDICT_FIELDS = {"model_name": model_name_from, "features": vector_from, "ticker": ticker_from,
                   "reference_price": positive_number}
_BATCH_FIELDS = {"model_name": model_name_from, "instances": instances_from}


def predict_request(data: Any) -> dict[str, Any]:
    """The checked ``POST /predict`` body, or ``ValidationError`` with a message per field."""
    if isinstance(data, dict) and "instances" in data:
        raise serializers.ValidationError({"instances": ["send batches to POST /predict/batch"]})
    out = _fields(data, _PREDICT_FIELDS, required=("model_name",))
    if ("features" in out) == ("ticker" in out):
        raise serializers.ValidationError({"features": ['send exactly one of "features" (a feature vector) or "ticker"']})
    if "reference_price" in out and "ticker" in out:
        raise serializers.ValidationError(
            {"reference_price": ["only with features: a ticker's reference price is its latest close"]}
        )
    return out


def batch_predict_request(data: Any) -> dict[str, Any]:
    """The checked ``POST /predict/batch`` body, or ``ValidationError`` with a message per field."""
    return _fields(data, _BATCH_FIELDS, required=("model_name", "instances"))


class PredictRequestSerializer(serializers.Serializer):
    """Documents the body (the schema); ``predict_request`` checks it with the fields' own checks, but
    without DRF's per-instance copy of every declared field (90 us a request, the checks 3 us)."""

    model_name = _model_name()
    features = FeatureVectorField(required=False)
    ticker = _ticker(required=False, help_text="Predict from the ticker's latest stored features instead")
    reference_price = PositiveNumberField(
        required=False,
        help_text="With features: the current price, so that prediction is a price (else it is a return)",
    )

    def run_validation(self, data: Any = empty) -> dict[str, Any]:
        return predict_request(data)


class BatchPredictRequestSerializer(serializers.Serializer):
    """Documents the body; ``batch_predict_request`` checks it (the same checks as a single request)."""

    model_name = _model_name()
    instances = InstancesField()

    def run_validation(self, data: Any = empty) -> dict[str, Any]:
        return batch_predict_request(data)


class RetrainRequestSerializer(serializers.Serializer):
    tickers = serializers.ListField(child=_ticker(), required=False, max_length=20_000,
                                    help_text="Train on these tickers only (default: the whole universe)")
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500)


class RecommendationsQuerySerializer(serializers.Serializer):
    date = serializers.DateField(required=False, help_text="Feature date (YYYY-MM-DD); default: the latest")
    top = serializers.IntegerField(required=False, default=20, min_value=1, max_value=1000)
    model_name = _model_name(required=False)
    recommendation = serializers.ChoiceField(choices=["BUY", "HOLD", "SELL"], required=False)


# --------------------------------------------------------------------------------------------------
# responses


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What is wrong, starting with the field's name when one is at fault")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False,
        help_text="Messages per request field",
    )


class SharedCacheStatsSerializer(serializers.Serializer):
    hits = serializers.IntegerField()
    misses = serializers.IntegerField()
    hit_ratio = serializers.FloatField()


class CacheStatsSerializer(serializers.Serializer):
    hits = serializers.IntegerField(help_text="Prediction cache hits in this worker")
    misses = serializers.IntegerField()
    hit_ratio = serializers.FloatField()
    errors = serializers.IntegerField(help_text="Cache reads or writes that failed")
    all_workers = SharedCacheStatsSerializer(help_text="Every worker's totals, as of their last log flush")


class HealthChecksSerializer(serializers.Serializer):
    database = serializers.CharField(help_text="`ok` or `error: <kind>`")
    cache = serializers.CharField(help_text="The shared cache: `ok` or `error: <kind>`")
    broker = serializers.CharField(help_text="The Celery broker: `ok` or `error: <kind>`")


class HealthSerializer(serializers.Serializer):
    """Everything but ``status`` is for staff only (anonymous and non-staff callers get ``status``)."""

    status = serializers.ChoiceField(choices=["healthy", "degraded", "unhealthy"])
    timestamp = serializers.DateTimeField(required=False)
    models_loaded = serializers.IntegerField(required=False, help_text="Active models this worker serves")
    models = serializers.ListField(child=serializers.CharField(), required=False)
    reasons = serializers.ListField(child=serializers.CharField(), required=False,
                                    help_text="Why degraded or unhealthy")
    database = serializers.CharField(required=False)
    checks = HealthChecksSerializer(required=False)
    active_versions = serializers.DictField(child=serializers.CharField(), required=False)
    loaded_versions = serializers.ListField(child=serializers.CharField(), required=False)
    unloaded = serializers.ListField(child=serializers.CharField(), required=False)
    cache = CacheStatsSerializer(required=False)
    prediction_log = serializers.DictField(child=serializers.IntegerField(), required=False)


class ModelInfoSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    features = serializers.IntegerField(help_text="Number of feature columns")
    score = serializers.FloatField(allow_null=True, help_text="Promotion gate score in [0, 1]")
    loaded_at = serializers.DateTimeField(allow_null=True)
    version = serializers.CharField(allow_null=True, help_text="Active version")
    status = serializers.ChoiceField(choices=["loaded", "not_loaded", "failed", "unloaded", "no_active_version"])
    horizon_days = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_null=True)


class ModelVersionSerializer(serializers.Serializer):
    version = serializers.CharField()
    status = serializers.CharField()
    status_reason = serializers.CharField(allow_blank=True)
    model_type = serializers.CharField(allow_blank=True)
    target = serializers.CharField()
    horizon_days = serializers.IntegerField()
    features = serializers.IntegerField()
    score = serializers.FloatField(allow_null=True)
    metrics = serializers.DictField(child=serializers.FloatField())
    created_at = serializers.DateTimeField()
    activated_at = serializers.DateTimeField(allow_null=True)
    artifact_sha256 = serializers.CharField(allow_blank=True)
    training_run_id = serializers.IntegerField(allow_null=True)
    loaded = serializers.BooleanField(help_text="Loaded in the worker that answered")


class _PredictionFields(serializers.Serializer):
    prediction = serializers.FloatField(
        help_text="Forecast price (reference price x (1 + expected_return)) when a reference price is known, "
                  "else the expected return"
    )
    prediction_type = serializers.ChoiceField(choices=["price", "return"])
    expected_return = serializers.FloatField(help_text="Simple return forecast over horizon_days")
    prob_up = serializers.FloatField()
    confidence = serializers.FloatField(help_text="|2 * prob_up - 1|")
    direction = serializers.ChoiceField(choices=["up", "down", "flat"])
    reference_price = serializers.FloatField(allow_null=True)
    ticker = serializers.CharField(allow_null=True)
    feature_date = serializers.DateField(allow_null=True)
    cached = serializers.BooleanField()


class PredictionSerializer(_PredictionFields):
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    horizon_days = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
    as_of = serializers.DateTimeField(
        allow_null=True,
        help_text="The moment the features describe: the latest trade of the ticker's today-so-far bar when "
                  "intraday, else the close (16:00 New York) of feature_date; null for a feature vector",
    )
    intraday = serializers.BooleanField(
        help_text="True when the features were recomputed with the session's partial bar (POST /quotes or the "
                  "provider's snapshot); feature_date is then the session and reference_price the bar's price",
    )
    intraday_reason = serializers.ChoiceField(
        choices=INTRADAY_REASONS, allow_null=True,
        help_text="Why not intraday (null when intraday): no_quote, quote_stale (older than "
                  "ML_INTRADAY_QUOTE_MAX_AGE_SECONDS), session_in_store (that session's final bar is stored), "
                  "features_behind, normalized_feature_set, window_unavailable, disabled, feature_vector",
    )


class QuoteSerializer(serializers.Serializer):
    """One quote: a trade (``price``, optional ``volume``: its size, added to the bar) or the session's
    bar so far (``open``, ``high``, ``low``, ``close``, ``volume``: cumulative; replaces an older one)."""

    ticker = _ticker(help_text="A ticker of the universe")
    time = serializers.DateTimeField(help_text="ISO 8601 with a UTC offset: the trade's time, or the bar's latest")
    price = serializers.FloatField(required=False, min_value=0, help_text="A trade's price (> 0)")
    volume = serializers.FloatField(required=False, min_value=0,
                                    help_text="A trade's size, or the bar's cumulative volume (>= 0)")
    open = serializers.FloatField(required=False, min_value=0)
    high = serializers.FloatField(required=False, min_value=0)
    low = serializers.FloatField(required=False, min_value=0)
    close = serializers.FloatField(required=False, min_value=0)


class QuotesRequestSerializer(serializers.Serializer):
    """Documents the body; ``inference.quotes.quotes_push`` checks it (every bad field named at once)."""

    quotes = QuoteSerializer(many=True, help_text="At most ML_MAX_BATCH_SIZE (1000) quotes")


class TodayBarSerializer(serializers.Serializer):
    ticker = serializers.CharField()
    session = serializers.DateField(help_text="The New York trading day of the bar")
    open = serializers.FloatField()
    high = serializers.FloatField()
    low = serializers.FloatField()
    close = serializers.FloatField()
    volume = serializers.FloatField()
    time = serializers.DateTimeField(help_text="The latest trade or quote in the bar")
    source = serializers.CharField(help_text="push (POST /quotes) or the polled provider")


class QuotesResponseSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Quotes stored")
    bars = TodayBarSerializer(many=True, help_text="The updated tickers' bars")
    timestamp = serializers.DateTimeField()


class BatchPredictionSerializer(serializers.Serializer):
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    horizon_days = serializers.IntegerField()
    timestamp = serializers.DateTimeField()
    count = serializers.IntegerField()
    cached = serializers.IntegerField()
    predictions = _PredictionFields(many=True)


class RetrainResponseSerializer(serializers.Serializer):
    message = serializers.CharField()
    timestamp = serializers.DateTimeField()
    run_id = serializers.IntegerField(help_text="The pipeline run (python manage.py retrain --status)")
    status = serializers.CharField(help_text="queued, running, ... or skipped (with the reason in the run)")
    deduplicated = serializers.BooleanField(
        help_text="True when a run of the same scope was already queued or running: that run's id is returned",
    )


class LoadResponseSerializer(serializers.Serializer):
    message = serializers.CharField()
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    loaded_at = serializers.DateTimeField()
    timestamp = serializers.DateTimeField()


class UnloadResponseSerializer(serializers.Serializer):
    message = serializers.CharField()
    model_name = serializers.CharField()
    unloaded_versions = serializers.ListField(child=serializers.CharField())
    timestamp = serializers.DateTimeField()


class RecommendationSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    ticker = serializers.CharField()
    recommendation = serializers.ChoiceField(choices=["BUY", "HOLD", "SELL"])
    expected_return = serializers.FloatField()
    prob_up = serializers.FloatField()
    confidence = serializers.FloatField()
    predicted_price = serializers.FloatField()


class RecommendationsSerializer(serializers.Serializer):
    date = serializers.DateField()
    model_name = serializers.CharField()
    model_version = serializers.CharField()
    horizon_days = serializers.IntegerField(allow_null=True)
    total = serializers.IntegerField(help_text="Rows that day (after the recommendation filter)")
    count = serializers.IntegerField()
    recommendations = RecommendationSerializer(many=True)
