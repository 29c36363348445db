from django.urls import path
from rest_framework.routers import SimpleRouter

from publishing.api.views import (
    AppViewSet,
    ArtifactFileView,
    ArtifactViewSet,
    BuildViewSet,
    BundleDownloadView,
    CodePushPackageView,
    DeviceRegisterView,
    ExpoAssetView,
    ExpoManifestView,
    UpdateCheckView,
)

router = SimpleRouter()
router.register("apps", AppViewSet, basename="app")
router.register("artifacts", ArtifactViewSet, basename="artifact")
router.register("builds", BuildViewSet, basename="build")

urlpatterns = [
    path("artifacts/<uuid:artifact_id>/file/", ArtifactFileView.as_view(), name="artifact-file"),
    path("bundles/<uuid:artifact_id>/", BundleDownloadView.as_view(), name="bundle-download"),
    path("updates/check", UpdateCheckView.as_view(), name="update-check"),
    path("devices/register", DeviceRegisterView.as_view(), name="device-register"),
    path("expo/<str:app_key>/manifest", ExpoManifestView.as_view(), name="expo-manifest"),
    path("expo/assets/<uuid:artifact_id>", ExpoAssetView.as_view(), name="expo-asset"),
    path(
        "codepush/packages/<uuid:artifact_id>",
        CodePushPackageView.as_view(),
        name="codepush-package",
    ),
    *router.urls,
]
