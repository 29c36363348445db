from django.contrib import admin
from django.utils.html import format_html_join

from buildhub.admin import ReadOnlyAdminMixin
from publishing import charts, health, services
from publishing.choices import Environment
from publishing.models import (
    AccountSecret,
    App,
    AppSigningKey,
    Artifact,
    Deployment,
    Device,
    DeviceCheckin,
    Release,
    ReleaseCheckinCount,
    ReleaseDevice,
    SourceUpload,
    UpdateReport,
    Version,
)


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    """The app's settings an operator may edit (name, platforms, runtime version, release
    health thresholds); what BuildHub writes is read-only below."""

    list_display = ["name", "slug", "account", "runtime_version", "created_at"]
    list_select_related = ["account"]
    search_fields = ["name", "slug", "account__slug", "app_key"]
    readonly_fields = ["app_key", "created_at", "release_health"]
    autocomplete_fields = ["account"]

    @admin.display(description="Release health")
    def release_health(self, app):
        """Adoption and failure rate per release of each environment with releases."""
        if app.pk is None:
            return "—"
        envs = set(Release.objects.filter(app=app).values_list("env", flat=True).distinct())
        shown = [health.release_health(app, env) for env in Environment.values if env in envs]
        if not shown:
            return "No release yet."
        return format_html_join(
            "",
            '<section class="bh-health" data-testid="health-{}"><h3>{} (devices seen in the '
            "last {} days: {})</h3>{}{}</section>",
            (
                (
                    figures["env"],
                    Environment(figures["env"]).label,
                    figures["window_days"],
                    figures["active_devices"],
                    charts.release_health_svg(figures),
                    charts.release_health_table(figures),
                )
                for figures in shown
            ),
        )


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """CodePush deployment keys (public: they ship in the apps); rotating is an action."""

    list_display = ["app", "env", "platform", "key", "created_at", "rotated_at"]
    list_select_related = ["app", "app__account"]
    list_filter = ["env", "platform"]
    search_fields = ["app__slug", "app__account__slug", "key"]
    actions = ["rotate_keys"]

    @admin.action(description="Rotate the keys (binaries with the old ones get no updates)")
    def rotate_keys(self, request, queryset):
        for deployment in queryset.select_related("app"):
            services.rotate_deployment_key(deployment.app, deployment.env, deployment.platform)
        self.message_user(request, f"Rotated {queryset.count()} deployment key(s).")


@admin.register(AppSigningKey)
class AppSigningKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Code signing certificates; the private key is never shown."""

    list_display = ["app", "key_id", "uploaded", "created_at", "updated_at"]
    list_select_related = ["app", "app__account"]
    fields = ["app", "key_id", "uploaded", "certificate_pem", "created_at", "updated_at"]


@admin.register(UpdateReport)
class UpdateReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "app", "env", "platform", "kind", "status", "label", "client_id"]
    list_select_related = ["app", "app__account"]
    list_filter = ["kind", "status", "env", "platform"]
    search_fields = ["app__slug", "label", "client_id"]


# --- what publishing writes: read here, changed only through its services ----------------
@admin.register(Version)
class VersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["app", "number", "channel", "status", "runtime_version", "created_at"]
    list_select_related = ["app", "app__account"]
    list_filter = ["status", "channel"]
    search_fields = ["app__slug", "app__account__slug"]
    raw_id_fields = ["assets", "builds"]


@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "app",
        "env",
        "version_number",
        "rollout_percent",
        "mandatory",
        "directive",
        "published_at",
        "rolled_back_at",
        "health_action",
    ]
    list_select_related = ["app", "app__account", "version"]
    list_filter = ["env", "mandatory", "health_action"]
    search_fields = ["app__slug", "app__account__slug"]
    date_hierarchy = "published_at"

    @admin.display(description="version", ordering="version__number")
    def version_number(self, release):
        return f"v{release.version.number}"


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "platform",
        "account",
        "app",
        "size",
        "visibility",
        "created_at",
        "expires_at",
        "deleted_at",
    ]
    list_select_related = ["account", "app", "app__account"]
    list_filter = ["kind", "platform", "visibility", "simulated"]
    search_fields = ["=id", "=job__id", "account__slug", "sha256"]
    date_hierarchy = "created_at"


@admin.register(SourceUpload)
class SourceUploadAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "app", "filename", "size", "state", "created_at", "expires_at"]
    list_select_related = ["app", "app__account"]
    list_filter = ["state"]
    search_fields = ["=id", "app__slug", "account__slug", "filename"]


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["device_id", "app", "platform", "runtime_version", "created_at", "last_seen"]
    list_select_related = ["app", "app__account"]
    list_filter = ["platform"]
    search_fields = ["device_id", "app__slug"]


@admin.register(DeviceCheckin)
class DeviceCheckinAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "device_id",
        "app",
        "env",
        "platform",
        "protocol",
        "running_release_id",
        "offered_release_id",
        "last_seen",
    ]
    list_select_related = ["app", "app__account"]
    list_filter = ["env", "platform", "protocol"]
    search_fields = ["device_id", "app__slug"]


@admin.register(ReleaseDevice)
class ReleaseDeviceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["device_id", "release", "outcome", "first_seen"]
    list_select_related = ["release__app", "release__version"]
    list_filter = ["outcome"]
    search_fields = ["device_id", "=release__id"]


@admin.register(ReleaseCheckinCount)
class ReleaseCheckinCountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["release", "hour", "checks", "offered", "failures", "successes"]
    list_select_related = ["release__app", "release__version"]
    search_fields = ["=release__id", "release__app__slug"]
    date_hierarchy = "hour"


@admin.register(AccountSecret)
class AccountSecretAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Which secrets an account keeps; the values are encrypted and never shown."""

    list_display = ["name", "account", "created_at", "updated_at"]
    list_select_related = ["account"]
    search_fields = ["name", "account__slug"]
    fields = ["account", "name", "created_at", "updated_at"]
