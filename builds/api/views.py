from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from buildhub.errors import ServiceError
from buildhub.net import client_ip
from buildhub.throttling import AccountBudgetMixin, refund_account_budget
from builds.api.permissions import caller_account, request_account, request_actor
from builds.api.serializers import (
    AccountSerializer,
    JobListQuerySerializer,
    JobLogPageSerializer,
    JobLogQuerySerializer,
    JobSerializer,
    JobSubmitSerializer,
)
from builds.choices import TokenScope
from builds.engine.lifecycle import cancel_job, retry_job, run_job_now
from builds.engine.submit import submit_job
from builds.models import Account, Job

READ, WRITE = TokenScope.BUILDS_READ, TokenScope.BUILDS_WRITE
SUBMIT_BUDGET, READ_BUDGET = "JOBS_SUBMIT_RATE", "JOBS_READ_RATE"


class AccountViewSet(viewsets.ReadOnlyModelViewSet):
    """The caller's account with its effective limits and this month's usage."""

    serializer_class = AccountSerializer
    required_scope = TokenScope.BUILDS_READ
    lookup_field = "slug"

    def get_queryset(self):
        accounts = Account.objects.select_related("enterprise_limit").prefetch_related(
            "timeout_addons"
        )
        account = caller_account(self.request)
        return accounts if account is None else accounts.filter(pk=account.pk)


class PlainTextLogRenderer(BaseRenderer):
    """Log lines as text, one per line: ``<seq> <time> <LEVEL> <message>``."""

    media_type = "text/plain"
    format = "text"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return "".join(
            f"{line['seq']} {line['ts']} {line['level'].upper()} {line['message']}\n"
            for line in data["lines"]
        )


class FormatNegotiation(DefaultContentNegotiation):
    """An unknown ``?format=`` is a bad request naming the field, not DRF's bare 404."""

    def filter_renderers(self, renderers, format):
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            known = ", ".join(renderer.format for renderer in renderers)
            raise ServiceError(
                f"Unknown format {format!r}; use one of: {known}.",
                fields={"format": f"one of {known}"},
            )
        return matching


JOB_VERB_ERRORS = {
    404: OpenApiResponse(description="No such job for this account."),
    409: OpenApiResponse(description="The job is not in a state this verb applies to."),
}


class JobViewSet(
    AccountBudgetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The caller account's jobs (staff: every account's): state, queue place, logs, verbs."""

    serializer_class = JobSerializer
    content_negotiation_class = FormatNegotiation
    required_scopes = {
        "list": READ,
        "retrieve": READ,
        "logs": READ,
        "create": WRITE,
        "cancel": WRITE,
        "retry": WRITE,
        "run_now": WRITE,
    }
    account_rates = {
        "create": SUBMIT_BUDGET,
        "retry": SUBMIT_BUDGET,
        "run_now": SUBMIT_BUDGET,
        "list": READ_BUDGET,
        "retrieve": READ_BUDGET,
        "logs": READ_BUDGET,
    }

    def get_queryset(self):
        jobs = Job.objects.select_related("account", "account__enterprise_limit")
        account = caller_account(self.request)
        return jobs if account is None else jobs.filter(account=account)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if getattr(response, "exception", False) and isinstance(
            response.accepted_renderer, PlainTextLogRenderer
        ):
            # Errors keep the API's JSON shape whatever format the logs were asked in.
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response

    @extend_schema(parameters=[JobListQuerySerializer])
    def list(self, request):
        """Newest first; filter with ``?status=queued,running`` and ``?kind=``."""
        query = JobListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        jobs = self.get_queryset()
        if "status" in query.validated_data:
            jobs = jobs.filter(status__in=query.validated_data["status"])
        if "kind" in query.validated_data:
            jobs = jobs.filter(kind=query.validated_data["kind"])
        if "account" in query.validated_data:
            jobs = jobs.filter(account__slug=query.validated_data["account"])
        page = self.paginate_queryset(jobs.order_by("-created_at", "pk"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        request=JobSubmitSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="The same key from the same account returns the first job (200).",
            )
        ],
        responses={
            201: JobSerializer,
            200: OpenApiResponse(JobSerializer, description="Idempotency-Key seen: that job."),
            400: OpenApiResponse(description="Unknown kind, bad params or timeout over limit."),
            403: OpenApiResponse(description="Account blocked or a staff-only kind."),
            429: OpenApiResponse(description="Monthly quota exhausted or rate limited."),
        },
    )
    def create(self, request):
        """Queue a job (``kind``, ``params``, ``timeout_minutes``)."""
        body = JobSubmitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        job, created = submit_job(
            request_account(request),
            data["kind"],
            data["params"],
            timeout_minutes=data.get("timeout_minutes"),
            idempotency_key=request.headers.get("Idempotency-Key", ""),
            submitted_by=str(request.user),
            staff=request.user.is_staff,
            request_meta={"ip": client_ip(request)},
        )
        if not created:
            refund_account_budget(request)  # a repeated Idempotency-Key queued nothing
        return Response(
            self.get_serializer(job).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        parameters=[
            JobLogQuerySerializer,
            OpenApiParameter(
                "format",
                str,
                enum=["json", "text"],
                description="text: plain lines (same as Accept: text/plain).",
            ),
        ],
        responses={
            (200, "application/json"): JobLogPageSerializer,
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR,
                description="One line per log line: `<seq> <time> <LEVEL> <message>`; the "
                "X-Next-After header says where to continue.",
            ),
            404: JOB_VERB_ERRORS[404],
        },
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, PlainTextLogRenderer])
    def logs(self, request, pk=None):
        """The job's log lines after ``?after=SEQ`` (redacted), oldest first."""
        job = self.get_object()  # read first: a job that has ended has all its lines stored
        query = JobLogQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.validated_data["after"]
        limit = query.validated_data.get("limit") or settings.JOB_LOGS_PAGE_LINES
        lines = list(job.logs.filter(seq__gt=after).order_by("seq")[: limit + 1])
        has_more = len(lines) > limit
        lines = lines[:limit]
        next_after = lines[-1].seq if lines else after
        page = JobLogPageSerializer(
            {
                "lines": lines,
                "next_after": next_after,
                "has_more": has_more,
                "finished": job.is_terminal,
            }
        ).data
        return Response(
            page,
            headers={"X-Next-After": str(next_after), "X-Has-More": str(has_more).lower()},
        )

    @extend_schema(request=None, responses={200: JobSerializer, **JOB_VERB_ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel: a queued job at once, a running one within about a second (409 once ended)."""
        job = cancel_job(self.get_object(), by=request_actor(request))
        return Response(self.get_serializer(job).data)

    @extend_schema(request=None, responses={200: JobSerializer, **JOB_VERB_ERRORS})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Queue a failed or timed-out job again as a new attempt (409 for other states)."""
        job = retry_job(self.get_object(), by=request_actor(request))
        return Response(self.get_serializer(job).data)

    @extend_schema(
        request=None,
        responses={
            200: JobSerializer,
            403: OpenApiResponse(description="Staff only."),
            **JOB_VERB_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], url_path="run-now", url_name="run-now")
    def run_now(self, request, pk=None):
        """Staff: move a queued job to the front of its class (it still waits for a slot)."""
        if not request.user.is_staff:
            raise exceptions.PermissionDenied(
                "Only staff can move a job to the front of the queue."
            )
        job = run_job_now(self.get_object(), by=request_actor(request))
        return Response(self.get_serializer(job).data)
