"""HTTP endpoints of the ML API server (spec: "ML API Server", port 8001)."""

from django.db import connection
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView


class HealthView(APIView):
    """Liveness and model status; public so load balancers and compose can probe it."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        responses=inline_serializer(
            "Health",
            {
                "status": serializers.ChoiceField(choices=["healthy", "degraded", "unhealthy"]),
                "timestamp": serializers.DateTimeField(),
                "models_loaded": serializers.IntegerField(),
                "models": serializers.ListField(child=serializers.CharField()),
                "database": serializers.CharField(),
            },
        )
    )
    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            database = "ok"
        except Exception as exc:  # the probe reports, it must not crash
            database = f"error: {exc.__class__.__name__}"
        status = "healthy" if database == "ok" else "unhealthy"
        return Response(
            {
                "status": status,
                "timestamp": timezone.now(),
                "models_loaded": 0,
                "models": [],
                "database": database,
            },
            status=200 if status != "unhealthy" else 503,
        )
