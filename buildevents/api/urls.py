from django.urls import path
from rest_framework.routers import SimpleRouter

from buildevents.api.views import BuildEventIngestView, BuildRunViewSet, BuildStatusView

router = SimpleRouter()
router.register("admin/build-runs", BuildRunViewSet, basename="build-run")

urlpatterns = [
    path("internal/build-events/", BuildEventIngestView.as_view(), name="build-events"),
    path("admin/build-status/", BuildStatusView.as_view(), name="build-status"),
    *router.urls,
]
