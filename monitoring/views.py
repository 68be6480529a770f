from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST

from monitoring.prometheus import render


def metrics(request):
    """Prometheus scrape endpoint (plain text exposition format)."""
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
