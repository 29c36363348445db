from django.urls import path
from rest_framework.routers import SimpleRouter

from buildevents.api.views import (
    AccountBuildRunViewSet,
    AccountBuildStatusView,
    BuildEventIngestView,
    BuildRunViewSet,
    BuildStatusView,
)

router = SimpleRouter()
router.register("admin/build-runs", BuildRunViewSet, basename="build-run")
router.register("build-runs", AccountBuildRunViewSet, basename="account-build-run")

urlpatterns = [
    path("internal/build-events/", BuildEventIngestView.as_view(), name="build-events"),
    path("admin/build-status/", BuildStatusView.as_view(), name="build-status"),
    path("build-status/", AccountBuildStatusView.as_view(), name="account-build-status"),
    *router.urls,
]
