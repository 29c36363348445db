"""The CodePush client API at the server's root, where ``react-native-code-push`` asks
(``serverUrl`` + ``v0.1/public/codepush/...``), and the legacy CodePush server's paths."""

from django.urls import path

from publishing.api.views import CodePushReportView, CodePushUpdateCheckView

PREFIX = "v0.1/public/codepush/"

urlpatterns = [
    path(f"{PREFIX}update_check", CodePushUpdateCheckView.as_view(), name="codepush-update-check"),
    path(
        f"{PREFIX}report_status/deploy",
        CodePushReportView.as_view(kind="deploy"),
        name="codepush-report-deploy",
    ),
    path(
        f"{PREFIX}report_status/download",
        CodePushReportView.as_view(kind="download"),
        name="codepush-report-download",
    ),
    path("updateCheck", CodePushUpdateCheckView.as_view(legacy=True), name="codepush-legacy-check"),
    path(
        "reportStatus/deploy",
        CodePushReportView.as_view(kind="deploy", legacy=True),
        name="codepush-legacy-deploy",
    ),
    path(
        "reportStatus/download",
        CodePushReportView.as_view(kind="download", legacy=True),
        name="codepush-legacy-download",
    ),
]
