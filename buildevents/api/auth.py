from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import permissions

from buildhub.throttling import CacheRateThrottle
from builds.api.auth import ApiTokenAuthentication


class BuildTokenAuthentication(ApiTokenAuthentication):
    """``X-Build-Token: bh_...``: an API token, as build scripts send it."""

    header = "HTTP_X_BUILD_TOKEN"

    def authenticate(self, request):
        raw = request.META.get(self.header, "").strip()
        return self.authenticate_credentials(raw) if raw else None

    def authenticate_header(self, request):
        return 'X-Build-Token realm="build-events"'


class BuildTokenScheme(OpenApiAuthenticationExtension):
    target_class = "buildevents.api.auth.BuildTokenAuthentication"
    name = "BuildToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Build-Token",
            "description": "An API token with the events:write scope.",
        }


class BuildEventsThrottle(CacheRateThrottle):
    """Per-token rate of event posts (``BUILD_EVENTS_RATE_LIMIT``), counted apart from the API's."""

    group = "build-events"

    def _rate(self, view) -> str:
        return settings.BUILD_EVENTS_RATE_LIMIT


class IsStaff(permissions.BasePermission):
    """Staff only (their admin session); API tokens never see other accounts' build runs."""

    message = "Staff only."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)
