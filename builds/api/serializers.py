import re
import uuid

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from builds import registry
from builds.choices import JobStatus
from builds.engine.insight import NOTHING, JobInsight, describe_job, describe_jobs
from builds.engine.logs import REDACTED, redact
from builds.models import Account, BuildUsage, Job, JobLog
from builds.services import current_usage


class LimitsSerializer(serializers.Serializer):
    tier = serializers.CharField()
    priority_class = serializers.CharField()
    timeout_minutes = serializers.IntegerField(help_text="Default and most a build may ask for.")
    tier_max_timeout_minutes = serializers.IntegerField()
    addon_minutes = serializers.IntegerField()
    builds_per_month = serializers.IntegerField(allow_null=True, help_text="null: unlimited")
    max_concurrent = serializers.IntegerField()
    max_bundle_mb = serializers.IntegerField()
    max_source_upload_mb = serializers.IntegerField()


class UsageSerializer(serializers.ModelSerializer):
    class Meta:
        model = BuildUsage
        fields = ["month", "builds_used", "builds_limit", "addon_minutes"]


class AccountSerializer(serializers.ModelSerializer):
    limits = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()

    class Meta:
        model = Account
        fields = ["slug", "name", "tier", "created_at", "blocked", "limits", "usage"]
        read_only_fields = fields

    @extend_schema_field(LimitsSerializer)
    def get_limits(self, account) -> dict:
        return LimitsSerializer(account.effective_limits().as_dict()).data

    @extend_schema_field(UsageSerializer)
    def get_usage(self, account) -> dict:
        return UsageSerializer(current_usage(account)).data


# --- jobs --------------------------------------------------------------------------------
SECRET_PARAM_NAME = re.compile(
    r"(?i)(token|secret|passw|api_?key|credential|private_?key|^auth(_|$)|authorization|cookie)"
)
URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact_params(value):
    """A job's params or result as callers may see them: values under secret-looking names,
    credentials in URLs and anything the log redactor catches are replaced."""
    if isinstance(value, dict):
        return {
            key: REDACTED if SECRET_PARAM_NAME.search(str(key)) else redact_params(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact_params(item) for item in value]
    if isinstance(value, str):
        return URL_CREDENTIALS.sub(f"{REDACTED}@", redact(value))
    return value


class JobListSerializer(serializers.ListSerializer):
    """Computes the queue insight of a whole page at once (a fixed number of queries)."""

    child: "JobSerializer"

    def to_representation(self, data):
        jobs = list(data.all() if hasattr(data, "all") else data)
        self.child.insights = describe_jobs(jobs)
        return [self.child.to_representation(job) for job in jobs]


class JobSerializer(serializers.ModelSerializer):
    """A job's full state as every API shows it, with its place in the queue."""

    account: "serializers.SlugRelatedField[Account]" = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )
    params = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    cancel_requested = serializers.SerializerMethodField()
    last_log_seq = serializers.IntegerField(source="log_seq", read_only=True)
    queue_position = serializers.SerializerMethodField(
        help_text="Queued jobs: the claim (1 = the next) that takes this job if it is eligible "
        "by then, following the fairness cycle. null otherwise or while its account is blocked."
    )
    eta_seconds = serializers.SerializerMethodField(
        help_text="Estimated seconds until the job finishes, from the median duration of "
        "recent succeeded jobs of its kind and the live workers' capacity; null when unknown."
    )
    waiting_reason = serializers.SerializerMethodField(
        help_text="Queued jobs: why the job is not running yet, in words."
    )

    insights: dict[uuid.UUID, JobInsight] | None = None

    class Meta:
        model = Job
        list_serializer_class = JobListSerializer
        fields = [
            "id",
            "kind",
            "account",
            "status",
            "progress",
            "stage",
            "priority_class",
            "attempts",
            "max_attempts",
            "error",
            "result",
            "params",
            "timeout_seconds",
            "run_now",
            "cancel_requested",
            "not_before",
            "created_at",
            "started_at",
            "finished_at",
            "last_log_seq",
            "queue_position",
            "eta_seconds",
            "waiting_reason",
        ]
        read_only_fields = fields

    def _insight(self, job) -> JobInsight:
        if self.insights is None:
            return describe_job(job)
        return self.insights.get(job.pk, NOTHING)

    def to_representation(self, job):
        self._current_insight = self._insight(job)
        return super().to_representation(job)

    def get_params(self, job) -> dict:
        return redact_params(job.params or {})

    def get_result(self, job) -> dict | None:
        return None if job.result is None else redact_params(job.result)

    def get_error(self, job) -> str:
        return redact(job.error)

    def get_cancel_requested(self, job) -> bool:
        return job.cancel_requested_at is not None

    def get_queue_position(self, job) -> int | None:
        return self._current_insight.queue_position

    def get_eta_seconds(self, job) -> int | None:
        return self._current_insight.eta_seconds

    def get_waiting_reason(self, job) -> str | None:
        return self._current_insight.waiting_reason


class JobSubmitSerializer(serializers.Serializer):
    kind = serializers.CharField(max_length=64)
    params = serializers.DictField(required=False, default=dict)
    timeout_minutes = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Default: the account's limit."
    )
    account = serializers.SlugField(
        required=False, help_text="Staff only: the account to run it for."
    )

    def validate_kind(self, kind):
        if registry.get_kind(kind) is None:
            raise serializers.ValidationError(f"Unknown job kind {kind!r}.")
        return kind


class JobListQuerySerializer(serializers.Serializer):
    status = serializers.CharField(
        required=False, help_text="One status or several separated by commas."
    )
    kind = serializers.CharField(required=False, max_length=64)
    account = serializers.SlugField(required=False, help_text="Staff only: one account's jobs.")

    def validate_status(self, value):
        statuses = [part.strip() for part in value.split(",") if part.strip()]
        unknown = sorted(set(statuses) - set(JobStatus.values))
        if unknown or not statuses:
            known = ", ".join(JobStatus.values)
            raise serializers.ValidationError(
                f"Unknown status {', '.join(unknown) or value!r}; use {known}."
            )
        return statuses


class JobLogQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(
        required=False, default=0, min_value=0, help_text="Lines after this sequence number."
    )
    limit = serializers.IntegerField(required=False, min_value=1, help_text="Lines at most.")

    def validate_limit(self, value):
        return min(value, settings.JOB_LOGS_PAGE_LINES)


class JobLogLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobLog
        fields = ["seq", "ts", "level", "message"]
        read_only_fields = fields


class JobLogPageSerializer(serializers.Serializer):
    lines = JobLogLineSerializer(many=True)
    next_after = serializers.IntegerField(help_text="Pass as ?after= to get the lines after.")
    has_more = serializers.BooleanField(help_text="More lines are stored already.")
    finished = serializers.BooleanField(help_text="The job has ended: no more lines will come.")
