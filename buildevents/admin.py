from django.contrib import admin, messages
from django.db import models
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from buildevents import charts, notifications, reports
from buildevents.choices import RunEnv
from buildevents.models import (
    BuildRun,
    BuildRunEvent,
    Notification,
    WebhookDelivery,
    WebhookEndpoint,
)
from buildhub.admin import ReadOnlyAdminMixin


class BuildRunEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = BuildRunEvent
    fields = ["created_at", "event", "stage", "duration_text", "message", "event_id"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "timeline event"
    verbose_name_plural = "timeline"

    @admin.display(description="duration")
    def duration_text(self, event):
        return notifications.format_duration(event.duration_ms) if event.duration_ms else "—"


def status_badge(run: BuildRun):
    return format_html(
        '<span class="bh-badge bh-badge-{}" data-testid="badge-run-status-{}">{}</span>',
        run.status,
        run.run_id,
        run.get_status_display(),
    )


@admin.register(BuildRun)
class BuildRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "short_id",
        "badge",
        "env",
        "command",
        "current_stage",
        "branch",
        "host",
        "started_at",
        "duration",
    ]
    list_display_links = ["short_id"]
    list_filter = ["status", "env", "origin"]
    list_select_related = ["account"]
    search_fields = ["run_id", "command", "branch", "commit", "host", "account__slug"]
    date_hierarchy = "started_at"
    inlines = [BuildRunEventInline]
    fields = [
        "run_id",
        "account",
        "badge",
        "status_reason",
        "env",
        "origin",
        "command",
        "host",
        "pid",
        "current_stage",
        "repo",
        "branch",
        "commit",
        "started_at",
        "ended_at",
        "duration",
        "exit_code",
        "last_heartbeat_at",
    ]
    readonly_fields = fields

    @admin.display(description="run", ordering="run_id")
    def short_id(self, run):
        return str(run.run_id)[:8]

    @admin.display(description="status", ordering="status")
    def badge(self, run):
        return status_badge(run)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, run):
        return notifications.format_duration(run.duration_ms) if run.duration_ms else "—"

    def get_urls(self):
        trends = self.admin_site.admin_view(self.trends_view)
        return [
            path("trends/", trends, name="buildevents_buildrun_trends"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "trends_url": reverse("admin:buildevents_buildrun_trends"),
        }
        return super().changelist_view(request, extra_context)

    def trends_view(self, request):
        env = request.GET.get("env", "")
        trends = reports.duration_trends(
            last_runs=20, days=30, env=env if env in RunEnv.values else ""
        )
        for command in trends["commands"]:
            command["chart"] = charts.daily_duration_svg(command["daily"])
        context = {
            **self.admin_site.each_context(request),
            "title": "Build duration trends",
            "opts": self.model._meta,
            "trends": trends,
            "envs": RunEnv.choices,
            "env": env,
        }
        return TemplateResponse(request, "admin/buildevents/buildrun/trends.html", context)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["title", "kind", "created_at", "read_at", "emailed_at"]
    list_filter = ["kind", ("read_at", admin.EmptyFieldListFilter)]
    list_select_related = ["run"]
    fields = ["title", "kind", "body", "run", "created_at", "read_at", "emailed_at"]
    readonly_fields = fields
    actions = ["mark_read"]

    def get_queryset(self, request):
        # Each operator sees their own notices.
        return super().get_queryset(request).filter(user=request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Mark selected notifications as read")
    def mark_read(self, request, queryset):
        count = notifications.mark_read(request.user, list(queryset.values_list("pk", flat=True)))
        messages.success(request, f"Marked {count} notification(s) as read.")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "description", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "description"]
    readonly_fields = ["created_at"]
    fields = ["url", "description", "kinds", "active", "secret", "created_at"]
    # Webhooks are called over HTTPS; a URL typed without a scheme gets https:// (Django 6's
    # default, and no deprecation warning on the form).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "kind",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["status", "kind"]
    list_select_related = ["endpoint"]
    fields = [
        "endpoint",
        "kind",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "created_at",
        "delivered_at",
        "body",
    ]
    readonly_fields = fields
