from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from buildevents.choices import EventKind, RunEnv, RunOrigin
from buildevents.models import BuildRun, BuildRunEvent
from buildevents.reports import stage_spans

STAGE_STATUSES = ["running", "done", "failed"]


class BuildEventInSerializer(serializers.Serializer):
    """One posted event (documentation of the body; ``validation.parse_event`` checks it)."""

    runId = serializers.UUIDField()  # noqa: N815 - the wire names are camelCase
    event = serializers.ChoiceField(choices=EventKind.choices)
    eventId = serializers.CharField(required=False, max_length=100)  # noqa: N815
    ts = serializers.DateTimeField(required=False, help_text="ISO 8601 or epoch milliseconds")
    env = serializers.ChoiceField(choices=RunEnv.choices, required=False)
    origin = serializers.ChoiceField(choices=RunOrigin.choices, required=False)
    command = serializers.CharField(required=False, max_length=1000)
    host = serializers.CharField(required=False, max_length=255)
    pid = serializers.IntegerField(required=False, min_value=0)
    stage = serializers.CharField(required=False, max_length=200, help_text="stage events only")
    message = serializers.CharField(required=False, help_text="at most 8 KB")
    durationMs = serializers.IntegerField(required=False, min_value=0)  # noqa: N815
    repo = serializers.CharField(required=False, max_length=500)
    branch = serializers.CharField(required=False, max_length=255)
    commit = serializers.CharField(required=False, max_length=64)
    payload = serializers.JSONField(required=False, help_text="a JSON object, at most 64 KB")


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    runs = serializers.DictField(child=serializers.CharField(), help_text="run id → status")


class BuildRunSerializer(serializers.ModelSerializer):
    runId = serializers.UUIDField(source="run_id")  # noqa: N815
    statusReason = serializers.CharField(source="status_reason")  # noqa: N815
    stage = serializers.CharField(source="current_stage")
    startedAt = serializers.DateTimeField(source="started_at")  # noqa: N815
    endedAt = serializers.DateTimeField(source="ended_at", allow_null=True)  # noqa: N815
    lastHeartbeatAt = serializers.DateTimeField(source="last_heartbeat_at")  # noqa: N815
    durationMs = serializers.IntegerField(source="duration_ms", allow_null=True)  # noqa: N815
    exitCode = serializers.IntegerField(source="exit_code", allow_null=True)  # noqa: N815
    account = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = BuildRun
        fields = [
            "runId",
            "account",
            "status",
            "statusReason",
            "env",
            "origin",
            "command",
            "host",
            "pid",
            "stage",
            "repo",
            "branch",
            "commit",
            "startedAt",
            "endedAt",
            "lastHeartbeatAt",
            "durationMs",
            "exitCode",
        ]


class BuildRunEventSerializer(serializers.ModelSerializer):
    eventId = serializers.CharField(source="event_id")  # noqa: N815
    durationMs = serializers.IntegerField(source="duration_ms", allow_null=True)  # noqa: N815
    ts = serializers.DateTimeField(source="created_at")
    receivedAt = serializers.DateTimeField(source="received_at")  # noqa: N815

    class Meta:
        model = BuildRunEvent
        fields = [
            "event",
            "stage",
            "message",
            "durationMs",
            "ts",
            "receivedAt",
            "payload",
            "eventId",
        ]


class StageSerializer(serializers.Serializer):
    stage = serializers.CharField()
    startedAt = serializers.DateTimeField(allow_null=True)  # noqa: N815
    completedAt = serializers.DateTimeField(allow_null=True)  # noqa: N815
    durationMs = serializers.IntegerField(allow_null=True)  # noqa: N815
    status = serializers.ChoiceField(choices=STAGE_STATUSES)


class BuildRunDetailSerializer(BuildRunSerializer):
    stages = serializers.SerializerMethodField()
    events = BuildRunEventSerializer(many=True, read_only=True)

    class Meta(BuildRunSerializer.Meta):
        fields = [*BuildRunSerializer.Meta.fields, "stages", "events"]

    @extend_schema_field(StageSerializer(many=True))
    def get_stages(self, run):
        return StageSerializer(stage_spans(run.events.all()), many=True).data
