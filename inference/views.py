"""HTTP endpoints of the ML API server (spec: "ML API Server" and "API Reference"), thin over
``inference.services`` (compute, writes) and ``inference.selectors`` (reads).

Errors are JSON ``{"detail": "...", "errors": {"<field>": ["..."]}}``: 400 for values that cannot be
used, 404 for an unknown model, ticker or date, 409 when the registry has nothing to load, 413 for
a body over ``ML_API_MAX_BODY_BYTES`` or a batch over ``ML_MAX_BATCH_SIZE``, 503 when a model cannot
be served (the reason is in ``detail`` and in ``GET /health``).
"""

from __future__ import annotations

import re
from typing import Any

from django.db import DatabaseError
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from inference import conf, quotes, selectors, services
from inference import serializers as s
from inference.exceptions import InferenceError, NotFound, PayloadTooLarge
from inference.model_manager import get_manager
from inference.parsers import LenientJSONParser
from inference.renderers import JSONOnly, ORJSONRenderer
from inference.throttling import FixedWindowAnonThrottle, FixedWindowUserThrottle, count_failed_auth
from investml import permissions
from investml.permissions import require

TAG = "ML API"
ERROR = OpenApiResponse(s.ErrorSerializer, description="Error with the offending field named")
AUTH_ERRORS = {
    401: OpenApiResponse(s.ErrorSerializer, description="No or invalid token"),
    429: OpenApiResponse(s.ErrorSerializer, description="Throttled"),
}
STAFF_ERRORS = {**AUTH_ERRORS, 403: OpenApiResponse(
    s.ErrorSerializer, description="Needs staff status and the action's model permission (README, Permissions)")}
BODY_ERRORS = {
    400: ERROR,
    413: OpenApiResponse(s.ErrorSerializer, description="Body or batch too large"),
    415: OpenApiResponse(s.ErrorSerializer, description="Send application/json"),
}
MODEL_NAME = OpenApiParameter(
    "model_name", str, OpenApiParameter.PATH, pattern=s.MODEL_NAME_PATTERN,
    description="lstm_predictor, xgboost_classifier, prophet_forecaster or ensemble",
    examples=[OpenApiExample("xgboost", value="xgboost_classifier"), OpenApiExample("lstm", value="lstm_predictor")],
)


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(value, name))
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix or "non_field_errors": [str(item) for item in detail]}
        out = {}
        for i, item in enumerate(detail):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix or "non_field_errors": [str(detail)]}


def error_payload(exc: Exception) -> tuple[dict[str, Any], int] | None:
    """The JSON body and status for an input or service error, None for anything else."""
    if isinstance(exc, InferenceError):
        return exc.as_dict(), exc.status_code
    if isinstance(exc, drf_exceptions.ValidationError):
        errors = _flatten(exc.detail)
        detail = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
        return {"detail": detail, "errors": errors}, status.HTTP_400_BAD_REQUEST
    return None


class InferenceAPIView(APIView):
    parser_classes = [LenientJSONParser]
    throttle_classes = [FixedWindowUserThrottle, FixedWindowAnonThrottle]
    permission_classes = [IsAuthenticated]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method in ("POST", "PUT", "PATCH"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            limit = conf.max_body_bytes()
            if length > limit:
                raise PayloadTooLarge(f"request body of {length:,} bytes is over the limit of {limit:,} bytes",
                                      field="body")
        get_manager().ensure_started()

    def handle_exception(self, exc):
        exc = count_failed_auth(self.request, exc)  # a missing or bad token: 401, then 429 per address
        known = error_payload(exc)
        if known is not None:
            return Response(known[0], status=known[1])
        return super().handle_exception(exc)

    def validated(self, serializer_class, data):
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


def _model_name(value: str) -> str:
    if not re.match(s.MODEL_NAME_PATTERN, value):
        raise NotFound(f"unknown model {value[:100]!r}", field="model_name")
    return value


PREDICT_EXAMPLES = [
    OpenApiExample(
        "Feature vector (spec)",
        value={"features": [1.2, 0.8, 150.5, 0.1], "model_name": "lstm_predictor"},
        request_only=True,
        description="As many values as the model has features (GET /models), in its column order",
    ),
    OpenApiExample("By ticker", value={"ticker": "AAPL", "model_name": "ensemble"}, request_only=True),
    OpenApiExample(
        "Prediction",
        value={
            "prediction": 152.30, "prediction_type": "price", "model_name": "ensemble",
            "timestamp": "2025-08-19T10:30:00Z", "confidence": 0.92, "model_version": "1.2.0",
            "horizon_days": 5, "expected_return": 0.0154, "prob_up": 0.96, "direction": "up",
            "reference_price": 149.99, "ticker": "AAPL", "feature_date": "2025-08-18", "cached": False,
        },
        response_only=True,
    ),
]


class HealthView(APIView):
    """Liveness and model status; public so load balancers and compose can probe it. Anonymous (and
    non-staff) callers get the status only: the details name artifact paths, versions and errors."""

    permission_classes = [AllowAny]
    throttle_classes: list = []
    # the default authentication classes, tried only to tell staff apart (see _is_staff)

    def perform_authentication(self, request):
        pass  # lazy: a probe with no token, a bad one or the database down still gets its answer

    @staticmethod
    def _is_staff(request) -> bool:
        try:
            user = request.user
        except (drf_exceptions.APIException, DatabaseError):
            return False
        return bool(user is not None and user.is_authenticated and user.is_staff)

    @extend_schema(
        tags=[TAG],
        summary="Health check",
        description="`healthy`, `degraded` (an active model cannot be served: failed to load, e.g. "
                    "`Failed to load model lstm_predictor@1.0.0: sha256 mismatch ...`, or active but not loaded "
                    "in the answering worker; no active model; the cache or the broker unreachable) or "
                    "`unhealthy` (database down, 503). Anonymous and non-staff callers get `status` only; staff "
                    "also get the reasons, the models, the state of each service (`checks`) and the prediction "
                    "cache hit ratio.",
        responses={200: s.HealthSerializer, 503: s.HealthSerializer},
        auth=[{"tokenAuth": []}, {"cookieAuth": []}, {}],
    )
    def get(self, request):
        body, code = selectors.health()
        if not self._is_staff(request):
            return Response({"status": body["status"]}, status=code)
        return Response(s.HealthSerializer(body).data, status=code)


class ModelsView(InferenceAPIView):
    @extend_schema(
        tags=[TAG],
        summary="List models",
        responses={200: s.ModelInfoSerializer(many=True), **AUTH_ERRORS},
        examples=[OpenApiExample(
            "Models",
            value=[{"name": "lstm_predictor", "type": "neural_network", "features": 20, "score": 0.85,
                    "loaded_at": "2025-08-19T02:00:00Z", "version": "1.0.0", "status": "loaded",
                    "horizon_days": 5, "error": None}],
            response_only=True,
        )],
    )
    def get(self, request):
        return Response(s.ModelInfoSerializer(selectors.models_overview(), many=True).data)


class PredictView(InferenceAPIView):
    # the hot path: the service's payload as it is (PredictionSerializer documents it), in JSON whatever
    # the Accept header (see inference.renderers)
    renderer_classes = [ORJSONRenderer]
    content_negotiation_class = JSONOnly

    @extend_schema(
        tags=[TAG],
        summary="Make a prediction",
        description=(
            "From a feature vector (`features`, the model's feature columns in order; xgboost_classifier "
            "and lstm_predictor, for which a lone vector is a one-day history) or from a ticker's latest "
            "stored features (`ticker`; every model, and the only way for prophet_forecaster and ensemble). "
            "`prediction` is a price when a reference price is known (the ticker's latest adjusted close, or "
            "`reference_price` sent with features), else the expected return. For many rows use "
            "POST /predict/batch."
        ),
        request=s.PredictRequestSerializer,
        responses={
            200: s.PredictionSerializer, **BODY_ERRORS, **AUTH_ERRORS,
            404: OpenApiResponse(s.ErrorSerializer, description="Unknown model or ticker"),
            503: OpenApiResponse(s.ErrorSerializer, description="The model cannot be served now"),
        },
        examples=PREDICT_EXAMPLES,
    )
    def post(self, request):
        data = self.validated(s.PredictRequestSerializer, request.data)
        return Response(services.predict(
            model_name=data["model_name"], features=data.get("features"), ticker=data.get("ticker"),
            reference_price=data.get("reference_price"), requester=request.user,
        ))


class PredictBatchView(InferenceAPIView):
    @extend_schema(
        tags=[TAG],
        summary="Batch prediction (one vectorized model call)",
        description="`instances`: feature vectors or ticker symbols (one kind per request), at most "
                    "ML_MAX_BATCH_SIZE (default 1000); predictions come back in the same order.",
        request=s.BatchPredictRequestSerializer,
        responses={
            200: s.BatchPredictionSerializer, **BODY_ERRORS, **AUTH_ERRORS,
            404: OpenApiResponse(s.ErrorSerializer, description="Unknown model or ticker"),
            503: OpenApiResponse(s.ErrorSerializer, description="The model cannot be served now"),
        },
        examples=[
            OpenApiExample("Tickers", value={"model_name": "ensemble", "instances": ["AAPL", "MSFT"]},
                           request_only=True),
            OpenApiExample("Vectors", value={"model_name": "xgboost_classifier",
                                             "instances": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]},
                           request_only=True),
        ],
    )
    def post(self, request):
        data = self.validated(s.BatchPredictRequestSerializer, request.data)
        result = services.predict_batch(model_name=data["model_name"], instances=data["instances"],
                                        requester=request.user)
        return Response(s.BatchPredictionSerializer(result).data)


class RetrainView(InferenceAPIView):
    permission_classes = [require(permissions.RETRAIN)]

    @extend_schema(
        tags=[TAG],
        summary="Trigger retraining (staff with training.add_pipelinerun)",
        request=s.RetrainRequestSerializer,
        responses={202: s.RetrainResponseSerializer, **BODY_ERRORS, **STAFF_ERRORS},
        examples=[OpenApiExample(
            "Queued", value={"message": "Training task queued", "timestamp": "2025-08-19T10:30:00Z", "run_id": 42,
                             "status": "queued", "deduplicated": False},
            response_only=True, status_codes=["202"],
        )],
    )
    def post(self, request):
        data = self.validated(s.RetrainRequestSerializer, request.data if request.data else {})
        result = services.retrain_queue_from_api(
            requested_by=request.user.get_username(), reason=data.get("reason", ""), tickers=data.get("tickers"),
        )
        return Response(s.RetrainResponseSerializer(result).data, status=status.HTTP_202_ACCEPTED)


class QuotesView(InferenceAPIView):
    permission_classes = [require(permissions.PUSH_QUOTES)]

    @extend_schema(
        tags=[TAG],
        summary="Push intraday quotes (staff with features.add_pricebar)",
        description="Updates each ticker's \"today so far\" bar in the online store, which POST /predict by "
                    "ticker then uses while it is fresh (ML_INTRADAY_QUOTE_MAX_AGE_SECONDS). A trade "
                    "(`price`, optional `volume` = its size) is merged into its session's bar; a bar (`open`, "
                    "`high`, `low`, `close`, `volume` = the session so far) replaces an older one. Every quote is "
                    "checked first (a ticker of the universe, a time with a UTC offset on a trading day after the "
                    "ticker's last stored bar and not in the future, prices > 0, high/low consistent): one bad quote "
                    "and nothing is stored, with every bad field named (`quotes[3].price`). Never written to the "
                    "price table or the offline feature store.",
        request=s.QuotesRequestSerializer,
        responses={200: s.QuotesResponseSerializer, **BODY_ERRORS, **STAFF_ERRORS,
                   503: OpenApiResponse(s.ErrorSerializer, description="Another request holds a ticker's bar")},
        examples=[
            OpenApiExample("Trades", request_only=True, value={"quotes": [
                {"ticker": "AAPL", "price": 191.32, "volume": 100, "time": "2024-06-10T10:31:07-04:00"},
                {"ticker": "MSFT", "price": 427.1, "time": "2024-06-10T14:31:09Z"}]}),
            OpenApiExample("Bars so far", request_only=True, value={"quotes": [
                {"ticker": "AAPL", "open": 190.0, "high": 192.1, "low": 189.5, "close": 191.32,
                 "volume": 1250000, "time": "2024-06-10T10:31:07-04:00"}]}),
        ],
    )
    def post(self, request):
        data = request.data
        if not isinstance(data, dict) or "quotes" not in data:
            raise drf_exceptions.ValidationError({"quotes": ['send {"quotes": [{"ticker", "time", "price"}, ...]}']})
        result = quotes.quotes_push(quotes=data["quotes"])
        return Response(s.QuotesResponseSerializer(result).data)


class ModelLoadView(InferenceAPIView):
    permission_classes = [require(permissions.SERVE)]

    @extend_schema(
        tags=[TAG],
        summary="Load a model (staff with registry.change_registeredmodel)",
        description="Loads the model's active version in the answering worker (checksum verified) and lets every "
                    "worker serve it again after an unload.",
        request=None,
        parameters=[MODEL_NAME],
        responses={
            200: s.LoadResponseSerializer, **STAFF_ERRORS,
            404: OpenApiResponse(s.ErrorSerializer, description="Unknown model"),
            409: OpenApiResponse(s.ErrorSerializer, description="No active version"),
            503: OpenApiResponse(s.ErrorSerializer, description="The artifact failed to load"),
        },
    )
    def post(self, request, model_name: str):
        return Response(s.LoadResponseSerializer(services.load_model(model_name=_model_name(model_name))).data)


class ModelDetailView(InferenceAPIView):
    permission_classes = [require(permissions.SERVE)]

    @extend_schema(
        tags=[TAG],
        summary="Unload a model (staff with registry.change_registeredmodel)",
        description="Stops serving the model in every worker (within ML_ACTIVE_VERSION_CHECK_SECONDS) until "
                    "POST /models/{model_name}/load; predictions for it get 503 meanwhile.",
        parameters=[MODEL_NAME],
        responses={200: s.UnloadResponseSerializer, **STAFF_ERRORS,
                   404: OpenApiResponse(s.ErrorSerializer, description="Unknown model")},
    )
    def delete(self, request, model_name: str):
        return Response(s.UnloadResponseSerializer(services.unload_model(model_name=_model_name(model_name))).data)


class ModelVersionsView(InferenceAPIView):
    @extend_schema(
        tags=[TAG],
        summary="Versions of a model",
        parameters=[MODEL_NAME],
        responses={200: s.ModelVersionSerializer(many=True), **AUTH_ERRORS,
                   404: OpenApiResponse(s.ErrorSerializer, description="Unknown model")},
    )
    def get(self, request, model_name: str):
        rows = selectors.model_versions(model_name=_model_name(model_name))
        return Response(s.ModelVersionSerializer(rows, many=True).data)


class RecommendationsView(InferenceAPIView):
    @extend_schema(
        tags=[TAG],
        summary="The day's ranked BUY / HOLD / SELL list",
        description="From the daily batch prediction (python manage.py predict_universe): rank 1 has the highest "
                    "expected return; BUY = top 20% with prob_up > 0.5, SELL = bottom 20% with prob_up < 0.5, "
                    "else HOLD. The ensemble's list unless model_name is given.",
        parameters=[s.RecommendationsQuerySerializer],
        responses={200: s.RecommendationsSerializer, 400: ERROR, **AUTH_ERRORS,
                   404: OpenApiResponse(s.ErrorSerializer, description="No predictions for that date or model")},
    )
    def get(self, request):
        query = self.validated(s.RecommendationsQuerySerializer, request.query_params)
        result = selectors.recommendations(
            on=query.get("date"), top=query["top"], model_name=query.get("model_name"),
            recommendation=query.get("recommendation"),
        )
        return Response(s.RecommendationsSerializer(result).data)
