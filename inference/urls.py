from django.urls import path

from inference import views

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
    path("models", views.ModelsView.as_view(), name="models"),
    path("models/<str:model_name>", views.ModelDetailView.as_view(), name="model-detail"),
    path("models/<str:model_name>/load", views.ModelLoadView.as_view(), name="model-load"),
    path("models/<str:model_name>/versions", views.ModelVersionsView.as_view(), name="model-versions"),
    path("predict", views.PredictView.as_view(), name="predict"),
    path("predict/batch", views.PredictBatchView.as_view(), name="predict-batch"),
    path("quotes", views.QuotesView.as_view(), name="quotes"),
    path("retrain", views.RetrainView.as_view(), name="retrain"),
    path("recommendations", views.RecommendationsView.as_view(), name="recommendations"),
]
