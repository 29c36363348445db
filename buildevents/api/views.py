from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from buildevents import reports, services
from buildevents.api.auth import BuildEventsThrottle, BuildTokenAuthentication, IsStaff
from buildevents.api.serializers import (
    BuildEventInSerializer,
    BuildRunDetailSerializer,
    BuildRunSerializer,
    IngestResultSerializer,
)
from buildevents.choices import RunEnv, RunStatus
from buildevents.models import BuildRun
from buildevents.validation import BodyTooLarge, parse_body
from buildhub.errors import ServiceError
from builds.api.permissions import HasTokenScope, caller_account
from builds.choices import TokenScope


def _int_param(request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ServiceError(
            f"Invalid input: {name}: must be an integer from {low} to {high}",
            fields={name: f"must be an integer from {low} to {high}"},
        )
    return value


def _choice_param(request, name: str, choices) -> str:
    value = request.query_params.get(name, "")
    if value and value not in choices.values:
        raise ServiceError(
            f"Invalid input: {name}: must be one of {', '.join(choices.values)}",
            fields={name: f"must be one of {', '.join(choices.values)}"},
        )
    return value


class BuildEventIngestView(APIView):
    """Lifecycle events from a build script: one event object, or an array of them."""

    authentication_classes = [BuildTokenAuthentication]
    permission_classes = [HasTokenScope]
    throttle_classes = [BuildEventsThrottle]
    parser_classes = []  # the body is read and checked by validation.parse_body
    required_scope = TokenScope.EVENTS_WRITE

    @extend_schema(
        request=BuildEventInSerializer,
        responses={200: IngestResultSerializer},
        description=(
            "Post one event or a JSON array of up to BUILD_EVENTS_MAX_BATCH events. A repeated "
            "eventId of a run is accepted and ignored. 400 names the field, 413 when the body "
            "is over 1 MB, 429 with Retry-After when rate-limited."
        ),
    )
    def post(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > settings.BUILD_EVENTS_MAX_BODY_BYTES:
            raise BodyTooLarge(
                f"The request body is larger than {settings.BUILD_EVENTS_MAX_BODY_BYTES} bytes."
            )
        events, _batch = parse_body(request.body)
        result = services.ingest_events(request.auth.account, events)
        return Response(
            {"accepted": result.accepted, "duplicates": result.duplicates, "runs": result.runs}
        )


class StaffRunsMixin:
    """Staff (admin session) see every account's runs."""

    permission_classes = [IsStaff]

    def runs_account(self):
        return None


class AccountRunsMixin:
    """A token with ``events:read`` sees its own account's runs only; staff see every one."""

    permission_classes = [HasTokenScope]
    required_scope = TokenScope.EVENTS_READ

    def runs_account(self):
        return caller_account(self.request)


class BuildStatusView(StaffRunsMixin, APIView):
    """Is something building now, which stage, and is it still alive (staff)."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "heartbeatTimeout",
                int,
                description="seconds of silence after which a running build counts as stale",
            )
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        timeout = _int_param(
            request,
            "heartbeatTimeout",
            settings.BUILD_EVENTS_HEARTBEAT_TIMEOUT_SECONDS,
            1,
            86400,
        )
        return Response(reports.build_status(timeout, account=self.runs_account()))


class AccountBuildStatusView(AccountRunsMixin, BuildStatusView):
    """Is one of the account's builds running now, which stage, and is it still alive."""


class BuildRunViewSet(StaffRunsMixin, viewsets.ReadOnlyModelViewSet):
    """History of build runs (staff), newest first; a run's page carries its timeline."""

    lookup_field = "run_id"
    lookup_url_kwarg = "run_id"
    lookup_value_regex = "[0-9a-fA-F-]{36}"

    def get_serializer_class(self):
        return BuildRunDetailSerializer if self.action == "retrieve" else BuildRunSerializer

    def get_queryset(self):
        runs = BuildRun.objects.select_related("account")
        account = self.runs_account()
        if account is not None:
            runs = runs.filter(account=account)
        if self.action == "retrieve":
            return runs.prefetch_related("events")
        if getattr(self, "swagger_fake_view", False):
            return runs
        env = _choice_param(self.request, "env", RunEnv)
        status = _choice_param(self.request, "status", RunStatus)
        branch = self.request.query_params.get("branch", "")
        if env:
            runs = runs.filter(env=env)
        if status:
            runs = runs.filter(status=status)
        if branch:
            runs = runs.filter(branch=branch)
        return runs.order_by("-started_at", "-pk")

    @extend_schema(
        parameters=[
            OpenApiParameter("env", str, enum=RunEnv.values),
            OpenApiParameter("status", str, enum=RunStatus.values),
            OpenApiParameter("branch", str),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(
        parameters=[
            OpenApiParameter("lastRuns", int, description="finished runs per command (1-500)"),
            OpenApiParameter("days", int, description="days of daily figures (1-365)"),
            OpenApiParameter("command", str),
            OpenApiParameter("env", str, enum=RunEnv.values),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=False, methods=["get"])
    def trends(self, request):
        """p50/p95 of build and stage durations per command: last N runs, and per day."""
        return Response(
            reports.duration_trends(
                last_runs=_int_param(request, "lastRuns", 20, 1, 500),
                days=_int_param(request, "days", 14, 1, 365),
                command=request.query_params.get("command", ""),
                env=_choice_param(request, "env", RunEnv),
                account=self.runs_account(),
            )
        )


class AccountBuildRunViewSet(AccountRunsMixin, BuildRunViewSet):
    """History of the account's own build runs, newest first; a run's page has its timeline."""
