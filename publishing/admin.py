from django.contrib import admin
from django.utils.html import format_html_join

from builds.admin import ReadOnlyAdmin
from publishing import charts, codepush, health
from publishing.choices import Environment
from publishing.models import App, AppSigningKey, Deployment, Release, UpdateReport


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
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
class DeploymentAdmin(ReadOnlyAdmin):
    """CodePush deployment keys (public: they ship in the apps); rotating is an action."""

    list_display = ["app", "env", "platform", "key", "created_at", "rotated_at"]
    list_select_related = ["app", "app__account"]
    list_filter = ["env", "platform"]
    search_fields = ["app__slug", "app__account__slug", "key"]
    actions = ["rotate_keys"]

    @admin.action(description="Rotate the keys (binaries with the old ones get no updates)")
    def rotate_keys(self, request, queryset):
        for deployment in queryset.select_related("app"):
            codepush.rotate(deployment.app, deployment.env, deployment.platform)
        self.message_user(request, f"Rotated {queryset.count()} deployment key(s).")


@admin.register(AppSigningKey)
class AppSigningKeyAdmin(ReadOnlyAdmin):
    """Code signing certificates; the private key is never shown."""

    list_display = ["app", "key_id", "uploaded", "created_at", "updated_at"]
    list_select_related = ["app", "app__account"]
    fields = ["app", "key_id", "uploaded", "certificate_pem", "created_at", "updated_at"]


@admin.register(UpdateReport)
class UpdateReportAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "app", "env", "platform", "kind", "status", "label", "client_id"]
    list_select_related = ["app", "app__account"]
    list_filter = ["kind", "status", "env", "platform"]
    search_fields = ["app__slug", "label", "client_id"]
