"""Routes of the monitoring dashboard, mounted at ``/dashboard/`` (namespace ``dashboard``)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from monitoring import dashboard_views as views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="dashboard:login"), name="logout"),
    path("alerts/", views.alerts, name="alerts"),
    path("alerts/<int:alert_id>/acknowledge/", views.acknowledge, name="acknowledge"),
    path("alerts/<int:alert_id>/resolve/", views.resolve, name="resolve"),
    path("costs/", views.costs, name="costs"),
    path("models/", views.models, name="models"),
    path("models/<str:name>/", views.model_detail, name="model"),
    path("models/<str:name>/versions/<int:version_id>/promote/", views.promote, name="promote"),
    path("models/<str:name>/rollback/", views.rollback, name="rollback"),
    path("drift/", views.drift, name="drift"),
    path("runs/", views.runs, name="runs"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
]
