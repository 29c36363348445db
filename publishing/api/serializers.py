import uuid

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from buildhub.errors import ServiceError
from builds.api.serializers import JobSerializer
from publishing import semver, signing
from publishing.artifacts import signed_file_url
from publishing.choices import (
    BuildStage,
    BuildTarget,
    Channel,
    Environment,
    Platform,
    Provider,
)
from publishing.models import (
    App,
    AppSigningKey,
    Artifact,
    Deployment,
    Device,
    Release,
    SourceUpload,
    Version,
)
from publishing.sources import upload_format, validate_git_ref, validate_git_url


class AppSerializer(serializers.ModelSerializer):
    platforms = serializers.ListField(
        child=serializers.ChoiceField(choices=Platform.choices), allow_empty=False
    )
    expo_updates_url = serializers.SerializerMethodField(
        help_text="What an Expo app puts in app.json's updates.url."
    )

    class Meta:
        model = App
        fields = [
            "slug",
            "name",
            "platforms",
            "runtime_version",
            "app_key",
            "expo_updates_url",
            "created_at",
            "failure_threshold_percent",
            "failure_action",
            "failure_min_devices",
        ]
        read_only_fields = ["app_key", "created_at"]

    def get_expo_updates_url(self, app) -> str:
        path = reverse("expo-manifest", kwargs={"app_key": app.app_key})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def validate_platforms(self, value):
        return sorted(set(value))

    def validate_slug(self, value):
        account = self.context["account"]
        taken = App.objects.filter(account=account, slug=value)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise serializers.ValidationError("This account has an app with this slug already.")
        return value


class SourceUploadSerializer(serializers.ModelSerializer):
    format = serializers.SerializerMethodField()

    class Meta:
        model = SourceUpload
        fields = [
            "id",
            "filename",
            "size",
            "sha256",
            "format",
            "state",
            "created_at",
            "expires_at",
        ]
        read_only_fields = fields

    def get_format(self, upload) -> str:
        return upload_format(upload)


class SourceUploadRequestSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A .tar.gz or .zip of the app's source.")


class DirectUploadRequestSerializer(serializers.Serializer):
    filename = serializers.CharField(max_length=255, help_text="ends in .tar.gz, .tgz or .zip")
    size = serializers.IntegerField(min_value=1, help_text="the archive's exact size in bytes")
    sha256 = serializers.RegexField(
        r"^[0-9a-fA-F]{64}$", required=False, default="", help_text="checked on completion"
    )


class DirectUploadFormSerializer(serializers.Serializer):
    url = serializers.URLField()
    method = serializers.CharField()
    # A field named like Serializer.fields: DRF's metaclass takes declared fields off the class.
    fields = serializers.DictField(child=serializers.CharField())  # type: ignore[assignment]


class DirectUploadSerializer(SourceUploadSerializer):
    upload = serializers.SerializerMethodField()
    complete_url = serializers.SerializerMethodField()

    class Meta(SourceUploadSerializer.Meta):
        fields = [*SourceUploadSerializer.Meta.fields, "upload", "complete_url"]
        read_only_fields = fields

    @extend_schema_field(DirectUploadFormSerializer)
    def get_upload(self, upload) -> dict:
        return self.context["form"]

    def get_complete_url(self, upload) -> str:
        return f"/api/v1/apps/{upload.app.slug}/sources/{upload.pk}/complete/"


class ArtifactSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Artifact
        fields = [
            "id",
            "kind",
            "platform",
            "size",
            "sha256",
            "content_type",
            "visibility",
            "simulated",
            "created_at",
            "expires_at",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, artifact) -> str:
        request = self.context.get("request")
        path = f"/api/v1/artifacts/{artifact.pk}/download/"
        return request.build_absolute_uri(path) if request else path


class VersionSerializer(serializers.ModelSerializer):
    assets = ArtifactSerializer(many=True, read_only=True)
    builds = serializers.SerializerMethodField()

    class Meta:
        model = Version
        fields = [
            "number",
            "channel",
            "status",
            "runtime_version",
            "created_at",
            "published_at",
            "assets",
            "builds",
        ]
        read_only_fields = fields

    def get_builds(self, version) -> list[str]:
        return [str(job.pk) for job in version.builds.all()]


class CreateVersionSerializer(serializers.Serializer):
    build = serializers.ListField(child=serializers.UUIDField(), allow_empty=False)

    def to_internal_value(self, data):
        if isinstance(data, dict) and isinstance(data.get("build"), str):
            data = {**data, "build": [data["build"]]}
        return super().to_internal_value(data)


class PublishSerializer(serializers.Serializer):
    target_environment = serializers.ChoiceField(
        choices=Environment.choices, default=Environment.PRODUCTION
    )
    mandatory = serializers.BooleanField(default=False)
    rollout_percent = serializers.IntegerField(min_value=1, max_value=100, default=100)
    target_binary_range = serializers.CharField(
        max_length=200,
        default="*",
        help_text="The app binary versions CodePush clients take this release on (semver).",
    )

    def validate_target_binary_range(self, value):
        try:
            return semver.validate_range(value)
        except semver.RangeError as error:
            raise serializers.ValidationError(str(error)) from None


class RollbackSerializer(serializers.Serializer):
    to = serializers.ChoiceField(
        choices=[("previous", "the previous release"), ("embedded", "the embedded bundle")],
        default="previous",
    )


class DeploymentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Deployment
        fields = ["env", "platform", "key", "created_at", "rotated_at"]
        read_only_fields = fields


class SigningKeySerializer(serializers.ModelSerializer):
    fingerprint_sha256 = serializers.SerializerMethodField()

    class Meta:
        model = AppSigningKey
        fields = ["key_id", "algorithm", "certificate_pem", "fingerprint_sha256", "uploaded"]
        read_only_fields = fields

    algorithm = serializers.SerializerMethodField()

    def get_algorithm(self, row) -> str:
        return signing.ALGORITHM

    def get_fingerprint_sha256(self, row) -> str:
        return signing.certificate_fingerprint(row)


class SigningKeyRequestSerializer(serializers.Serializer):
    """Empty: BuildHub generates a key. With both PEMs: the customer's own key is kept."""

    key_id = serializers.RegexField(r"^[A-Za-z0-9._-]{1,64}$", default=signing.DEFAULT_KEY_ID)
    private_key_pem = serializers.CharField(required=False, max_length=20000, trim_whitespace=False)
    certificate_pem = serializers.CharField(required=False, max_length=20000, trim_whitespace=False)

    def validate(self, data):
        if ("private_key_pem" in data) != ("certificate_pem" in data):
            raise serializers.ValidationError(
                "Upload private_key_pem and certificate_pem together, or neither to generate."
            )
        return data


class ReleaseSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.number")

    class Meta:
        model = Release
        fields = [
            "env",
            "version",
            "manifest_key",
            "published_at",
            "rollout_percent",
            "mandatory",
            "target_binary_range",
            "directive",
            "rolled_back_at",
        ]
        read_only_fields = fields


class ReleaseHealthRowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    version = serializers.IntegerField()
    published_at = serializers.DateTimeField()
    live = serializers.BooleanField(help_text="The release devices are offered now.")
    directive = serializers.CharField()
    rollout_percent = serializers.IntegerField()
    rolled_back_at = serializers.DateTimeField(allow_null=True)
    health_action = serializers.CharField(help_text='"halt" or "rollback" when the threshold did.')
    health_action_at = serializers.DateTimeField(allow_null=True)
    devices_running = serializers.IntegerField(
        help_text="Devices whose last check-in in the window says they run it."
    )
    adoption_percent = serializers.FloatField(
        allow_null=True, help_text="devices_running out of the window's active devices."
    )
    devices_tried = serializers.IntegerField(
        help_text="Devices that ran it or reported it failing."
    )
    devices_failed = serializers.IntegerField(help_text="Devices that reported it failing.")
    failure_rate_percent = serializers.FloatField(
        allow_null=True, help_text="devices_failed out of devices_tried."
    )
    checks = serializers.IntegerField(help_text="Check-ins of devices running it (window).")
    offered = serializers.IntegerField(help_text="Check-ins answered with it (window).")
    failure_reports = serializers.IntegerField(help_text="Failure reports (window), any client.")
    success_reports = serializers.IntegerField(help_text="CodePush install reports (window).")


class ReleaseHealthSerializer(serializers.Serializer):
    env = serializers.CharField()
    window_days = serializers.IntegerField()
    active_devices = serializers.IntegerField(help_text="Devices that checked in in the window.")
    devices_on_embedded_or_unknown = serializers.IntegerField()
    failure_threshold_percent = serializers.IntegerField(allow_null=True)
    failure_action = serializers.CharField()
    failure_min_devices = serializers.IntegerField()
    releases = ReleaseHealthRowSerializer(many=True)


class UpdateCheckQuerySerializer(serializers.Serializer):
    app = serializers.SlugField()
    platform = serializers.ChoiceField(choices=Platform.choices)
    runtime_version = serializers.CharField(max_length=64)
    channel = serializers.CharField(max_length=32, required=False, default="")
    env = serializers.ChoiceField(choices=Environment.choices, default=Environment.PRODUCTION)
    current = serializers.RegexField(r"^[0-9a-f]{64}$", required=False, default="")
    device = serializers.CharField(max_length=128, required=False, default="")


class UpdateSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    bundle_url = serializers.CharField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    mandatory = serializers.BooleanField()
    published_at = serializers.CharField()


class DeviceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = ["device_id", "platform", "runtime_version", "created_at", "last_seen"]
        read_only_fields = ["created_at", "last_seen"]
        validators: list = []  # (app, device_id) is unique: registering again updates the device


def artifact_link(artifact, request) -> str:
    return signed_file_url(artifact, request)


class BuildRequestSerializer(serializers.Serializer):
    """A build request; combinations a worker cannot run are refused naming the field."""

    app = serializers.SlugField()
    target = serializers.ChoiceField(choices=BuildTarget.choices)
    platform = serializers.ChoiceField(choices=Platform.choices)
    stage = serializers.ChoiceField(choices=BuildStage.choices, default=BuildStage.BUILD)
    provider = serializers.ChoiceField(choices=Provider.choices, required=False)
    channel = serializers.ChoiceField(choices=Channel.choices, default=Channel.PRODUCTION)
    # A field named like Field.source: DRF's metaclass takes declared fields off the class.
    source = serializers.DictField(required=False)  # type: ignore[assignment]
    timeout_minutes = serializers.IntegerField(required=False, min_value=1)
    dry_run = serializers.BooleanField(default=False)

    PROVIDERS = {
        BuildTarget.OTA: {Provider.LOCAL},
        BuildTarget.EXPO: {Provider.EAS},
        BuildTarget.FLUTTER: {Provider.LOCAL, Provider.CI},
        BuildTarget.FLUTTERFLOW: {Provider.CI, Provider.LOCAL},
    }
    DEFAULT_PROVIDER = {
        BuildTarget.OTA: Provider.LOCAL,
        BuildTarget.EXPO: Provider.EAS,
        BuildTarget.FLUTTER: Provider.LOCAL,
        BuildTarget.FLUTTERFLOW: Provider.CI,
    }

    def validate_source(self, source):
        if set(source) == {"upload"}:
            try:
                return {"upload": str(uuid.UUID(str(source["upload"])))}
            except ValueError:
                raise serializers.ValidationError("upload must be a source upload id.") from None
        if set(source) in ({"git"}, {"git", "ref"}):
            url, ref = source.get("git"), source.get("ref", "")
            if not isinstance(url, str) or not isinstance(ref, str):
                raise serializers.ValidationError("git and ref are strings.")
            try:
                return {"git": validate_git_url(url), "ref": validate_git_ref(ref)}
            except ServiceError as refusal:
                raise serializers.ValidationError(refusal.message) from None
        raise serializers.ValidationError('Give {"upload": id} or {"git": url, "ref": ref}.')

    def validate(self, data):
        target, stage, platform = data["target"], data["stage"], data["platform"]
        provider = data.setdefault("provider", self.DEFAULT_PROVIDER[target])
        if provider not in self.PROVIDERS[target]:
            allowed = ", ".join(sorted(self.PROVIDERS[target]))
            raise serializers.ValidationError({"provider": f"{target} builds use: {allowed}."})
        if stage == BuildStage.SUBMIT and target in (BuildTarget.OTA, BuildTarget.FLUTTERFLOW):
            raise serializers.ValidationError(
                {"stage": f"{target} builds cannot be submitted to a store."}
            )
        if stage == BuildStage.SUBMIT and (target, provider) == (
            BuildTarget.FLUTTER,
            Provider.LOCAL,
        ):
            raise serializers.ValidationError(
                {"provider": "Flutter store submission runs in the customer's CI; use provider ci."}
            )
        if (target, platform, provider) == (BuildTarget.FLUTTER, Platform.IOS, Provider.LOCAL):
            raise serializers.ValidationError(
                {"provider": "iOS Flutter builds need macOS and Xcode; use provider ci."}
            )
        if data["dry_run"] and target == BuildTarget.OTA:
            raise serializers.ValidationError(
                {"dry_run": "Dry runs are for store builds (expo, flutter, flutterflow)."}
            )
        needs_source = target == BuildTarget.OTA or (
            (target, provider)
            in ((BuildTarget.EXPO, Provider.EAS), (BuildTarget.FLUTTER, Provider.LOCAL))
            and not data["dry_run"]
        )
        if needs_source and "source" not in data:
            raise serializers.ValidationError({"source": f"{target} builds need a source."})
        return data


class BuildSerializer(JobSerializer):
    """A build job as the jobs API shows it (queue position, ETA), with its artifacts."""

    artifacts = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "artifacts"]
        read_only_fields = fields

    @extend_schema_field(ArtifactSerializer(many=True))
    def get_artifacts(self, job):
        rows = [a for a in job.artifacts.all() if a.deleted_at is None]
        return ArtifactSerializer(rows, many=True, context=self.context).data
