from django.urls import path
from django.views.generic import RedirectView

from monitoring import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard:overview", permanent=False), name="home"),
    path("metrics", views.metrics, name="metrics"),
]
