import secrets
import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from builds.models import Account
from publishing.choices import (
    ArtifactKind,
    Channel,
    CheckinProtocol,
    DeviceOutcome,
    Environment,
    FailureAction,
    Platform,
    SourceState,
    VersionStatus,
    Visibility,
)


def new_app_key() -> str:
    return f"app_{secrets.token_urlsafe(18)}"


def new_deployment_key() -> str:
    return f"dk_{secrets.token_urlsafe(24)}"


class App(models.Model):
    """A customer's mobile app; devices identify it by its public ``app_key``."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="apps")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    platforms = models.JSONField(default=list)
    runtime_version = models.CharField(max_length=64, blank=True)
    app_key = models.CharField(max_length=64, unique=True, default=new_app_key, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Release health (publishing.health): when a live release's failure rate reaches this
    # percentage over at least ``failure_min_devices`` devices, ``failure_action`` is taken.
    failure_threshold_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Failure rate (1-100 %) that halts or rolls back a release; blank: never.",
    )
    failure_action = models.CharField(
        max_length=16, choices=FailureAction.choices, default=FailureAction.HALT
    )
    failure_min_devices = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1)],
        help_text="Devices that must have tried a release before its failure rate counts.",
    )

    class Meta:
        ordering = ["account__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["account", "slug"], name="app_unique_account_slug")
        ]

    def __str__(self):
        return f"{self.name} ({self.account.slug})"


class SourceUpload(models.Model):
    """An uploaded .tar.gz or .zip of an app's source, kept in private storage for builds."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="source_uploads")
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="source_uploads")
    storage_key = models.CharField(max_length=300)
    filename = models.CharField(max_length=255, blank=True)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    state = models.CharField(max_length=10, choices=SourceState.choices, default=SourceState.READY)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"source {self.id} of {self.app}"


class Artifact(models.Model):
    """A build output in storage (or an external URL) with its size, hash and expiry."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="artifacts")
    job = models.ForeignKey(
        "builds.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="artifacts"
    )
    app = models.ForeignKey(
        App, null=True, blank=True, on_delete=models.CASCADE, related_name="artifacts"
    )
    kind = models.CharField(max_length=24, choices=ArtifactKind.choices)
    platform = models.CharField(max_length=16, choices=Platform.choices, blank=True)
    storage_key = models.CharField(max_length=400, blank=True)
    url = models.URLField(max_length=1000, blank=True)
    visibility = models.CharField(
        max_length=8, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    simulated = models.BooleanField(default=False, help_text="Made by a dry run, not a real build.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["expires_at"],
                name="artifact_expiry",
                condition=models.Q(deleted_at__isnull=True),
            ),
            models.Index(fields=["sha256"], name="artifact_sha256"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.id}"


class Version(models.Model):
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.PRODUCTION)
    status = models.CharField(
        max_length=16, choices=VersionStatus.choices, default=VersionStatus.DRAFT
    )
    runtime_version = models.CharField(max_length=64, blank=True)
    assets = models.ManyToManyField(Artifact, related_name="versions", blank=True)
    builds = models.ManyToManyField("builds.Job", related_name="versions", blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["app", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["app", "number"], name="version_unique_app_number")
        ]

    def __str__(self):
        return f"{self.app.slug} v{self.number}"


class Release(models.Model):
    """A version published to an environment; the newest live one is what devices get."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="releases")
    env = models.CharField(max_length=16, choices=Environment.choices)
    version = models.ForeignKey(Version, on_delete=models.PROTECT, related_name="releases")
    manifest_key = models.CharField(max_length=300)
    manifest = models.JSONField(default=dict)
    published_at = models.DateTimeField(default=timezone.now)
    rollout_percent = models.PositiveSmallIntegerField(default=100)
    mandatory = models.BooleanField(default=False)
    # The app binaries (their version) a CodePush client takes this release on: a semver range.
    target_binary_range = models.CharField(max_length=200, default="*")
    # Not an update but an instruction: "rollBackToEmbedded" sends devices back to the bundle
    # their binary carries (its version is the release it replaced).
    directive = models.CharField(max_length=32, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey("builds.Job", null=True, blank=True, on_delete=models.SET_NULL)
    # Set once when the app's failure threshold halted or rolled back this release.
    health_action = models.CharField(max_length=16, choices=FailureAction.choices, blank=True)
    health_action_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["app", "env", "-published_at"]
        indexes = [models.Index(fields=["app", "env", "-published_at"], name="release_current")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rollout_percent__lte=100), name="release_rollout_at_most_100"
            )
        ]

    def __str__(self):
        return f"{self.app.slug} v{self.version.number} on {self.env}"


class AppSigningKey(models.Model):
    """An app's code signing key for Expo Updates manifests (publishing.signing).

    The private key is kept encrypted (as account secrets are) and never leaves the server;
    the certificate is what the app embeds.
    """

    app = models.OneToOneField(App, on_delete=models.CASCADE, related_name="signing_key")
    key_id = models.CharField(max_length=64, default="main")
    private_key_encrypted = models.BinaryField(editable=False)
    certificate_pem = models.TextField()
    uploaded = models.BooleanField(default=False, help_text="Uploaded rather than generated.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"code signing key {self.key_id} of {self.app}"


class Deployment(models.Model):
    """A CodePush deployment: what an app binary's deployment key names (app, environment,
    platform). Keys are public (they ship in the app) and can be rotated."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="deployments")
    env = models.CharField(max_length=16, choices=Environment.choices)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    key = models.CharField(max_length=64, unique=True, default=new_deployment_key)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["app", "env", "platform"]
        constraints = [
            models.UniqueConstraint(
                fields=["app", "env", "platform"], name="deployment_unique_app_env_platform"
            )
        ]

    def __str__(self):
        return f"{self.app.slug} {self.env} {self.platform}"


class UpdateReport(models.Model):
    """A client's report on an update: downloaded, installed (DeploymentSucceeded) or rolled
    back (DeploymentFailed)."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="update_reports")
    env = models.CharField(max_length=16, choices=Environment.choices)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    kind = models.CharField(max_length=16)  # "download" or "deploy"
    status = models.CharField(max_length=32, blank=True)
    label = models.CharField(max_length=64, blank=True)
    app_version = models.CharField(max_length=64, blank=True)
    client_id = models.CharField(max_length=128, blank=True)
    previous_label_or_app_version = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["app", "env", "label"], name="update_report_label")]

    def __str__(self):
        return f"{self.kind} {self.status} {self.label} of {self.app.slug}"


class Device(models.Model):
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="devices")
    device_id = models.CharField(max_length=128)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    runtime_version = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "device_id"], name="device_unique_app_device")
        ]

    def __str__(self):
        return f"{self.device_id} ({self.platform})"


class DeviceCheckin(models.Model):
    """A device's last check-in in an app's environment: the release it runs (None: its
    embedded bundle, or one BuildHub cannot name) and the one it was offered (None: none).

    Written in batches by publishing.checkins (the last check-in of a batch wins)."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="device_checkins")
    env = models.CharField(max_length=16, choices=Environment.choices)
    device_id = models.CharField(max_length=128)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    protocol = models.CharField(max_length=16, choices=CheckinProtocol.choices)
    running_release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    offered_release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app", "env", "device_id"], name="device_checkin_unique_device"
            )
        ]
        indexes = [
            models.Index(fields=["app", "env", "last_seen"], name="device_checkin_recent"),
        ]

    def __str__(self):
        return f"{self.device_id} on {self.env}"


class ReleaseDevice(models.Model):
    """A device known to have run a release, or to have reported it failing (once each):
    what a release's failure rate is computed from."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="devices")
    device_id = models.CharField(max_length=128)
    outcome = models.CharField(max_length=16, choices=DeviceOutcome.choices)
    first_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["release", "outcome", "device_id"], name="release_device_unique"
            )
        ]

    def __str__(self):
        return f"{self.device_id} {self.outcome} release {self.release_id}"


class ReleaseCheckinCount(models.Model):
    """Check-ins and client reports about a release in one hour (UTC), counted in batches.

    ``checks``: check-ins of devices running it; ``offered``: check-ins answered with it;
    ``failures`` / ``successes``: client reports (every report, devices with no id too)."""

    release = models.ForeignKey(Release, on_delete=models.CASCADE, related_name="checkin_counts")
    hour = models.DateTimeField()
    checks = models.PositiveBigIntegerField(default=0)
    offered = models.PositiveBigIntegerField(default=0)
    failures = models.PositiveBigIntegerField(default=0)
    successes = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["release", "hour"]
        constraints = [
            models.UniqueConstraint(fields=["release", "hour"], name="release_checkin_count_hour")
        ]

    def __str__(self):
        return f"release {self.release_id} at {self.hour:%Y-%m-%d %H}h"


class AccountSecret(models.Model):
    """A value a build needs (e.g. EXPO_TOKEN), encrypted at rest, given to tools as env."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(max_length=64)
    value_encrypted = models.BinaryField(editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "name"]
        constraints = [
            models.UniqueConstraint(fields=["account", "name"], name="secret_unique_account_name")
        ]

    def __str__(self):
        return f"{self.name} of {self.account}"
