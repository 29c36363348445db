import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from buildhub.admin import ReadOnlyAdminMixin
from buildhub.errors import ServiceError
from builds import registry
from builds.choices import JobStatus, TokenScope
from builds.engine import lifecycle
from builds.engine import workers as worker_service
from builds.engine.insight import describe_job
from builds.models import (
    Account,
    ApiToken,
    BuildUsage,
    EnterpriseLimit,
    HeatUp,
    Job,
    JobLog,
    Membership,
    TimeoutAddOn,
    Worker,
)
from builds.services import (
    actor_name,
    block_account,
    create_api_token,
    current_usage,
    revoke_api_token,
    unblock_account,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class EnterpriseLimitInline(admin.StackedInline):
    model = EnterpriseLimit
    extra = 0
    max_num = 1


class TimeoutAddOnInline(admin.TabularInline):
    model = TimeoutAddOn
    extra = 0
    fields = ["kind", "active", "created_at", "ended_at"]
    readonly_fields = ["created_at"]


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "tier", "blocked", "created_at"]
    list_filter = ["tier", "blocked"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = [
        "created_at",
        "effective_limits_table",
        "usage_this_month",
        "tokens_table",
        "blocked_at",
    ]
    fieldsets = [
        (None, {"fields": ["name", "slug", "tier", "created_at"]}),
        ("Effective limits", {"fields": ["effective_limits_table", "usage_this_month"]}),
        ("API tokens", {"fields": ["tokens_table"]}),
        ("Blocking", {"fields": ["blocked", "blocked_reason", "blocked_at"]}),
    ]
    inlines = [EnterpriseLimitInline, TimeoutAddOnInline, MembershipInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("enterprise_limit")
            .prefetch_related("timeout_addons")
        )

    def save_model(self, request, obj, form, change):
        """Blocking and unblocking go through the services (unblocking wakes the account's
        queued jobs); the other fields are saved as edited (only those)."""
        if change:
            edited = [name for name in form.changed_data if name != "blocked"]
            if edited:
                obj.save(update_fields=edited)
        else:
            obj.blocked = False
            obj.save()
        if "blocked" not in form.changed_data:
            return
        try:
            if form.cleaned_data["blocked"]:
                reason = form.cleaned_data["blocked_reason"]
                block_account(obj, reason or f"Blocked by {actor_name(request.user)}.")
            else:
                unblock_account(obj)
        except ServiceError as error:
            self.message_user(request, error.message, messages.WARNING)

    @admin.display(description="Effective limits now")
    def effective_limits_table(self, account):
        if account.pk is None:
            return "Shown once the account is saved."
        limits = account.effective_limits()
        rows = [
            ("Queue", limits.priority_class),
            (
                "Timeout",
                f"{limits.timeout_minutes} min (tier max "
                f"{limits.tier_max_timeout_minutes} min, add-ons +{limits.addon_minutes})",
            ),
            ("Builds per month", limits.builds_per_month or "unlimited"),
            ("Concurrent builds", limits.max_concurrent),
            ("Bundle size", f"{limits.max_bundle_mb} MB"),
        ]
        return format_html_join(
            "", "<div><strong>{}</strong>: {}</div>", ((label, value) for label, value in rows)
        )

    @admin.display(description="Usage this month")
    def usage_this_month(self, account):
        if account.pk is None:
            return "–"
        usage = current_usage(account)
        limit = usage.builds_limit if usage.builds_limit is not None else "unlimited"
        return f"{usage.builds_used} of {limit} builds in {usage.month:%B %Y}"

    @admin.display(description="Tokens")
    def tokens_table(self, account):
        if account.pk is None:
            return "–"
        add = reverse("admin:builds_apitoken_add") + f"?account={account.pk}"
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>{}</a></td><td>bh_{}_…</td>"
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:builds_apitoken_change", args=[token.pk]),
                    token.name,
                    token.key_id,
                    ", ".join(token.scopes),
                    f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never used",
                    "revoked" if token.revoked_at else "active",
                )
                for token in account.api_tokens.order_by("-created_at")
            ),
        )
        return format_html(
            "<table><thead><tr><th>Name</th><th>Key</th><th>Scopes</th><th>Last used</th>"
            "<th>State</th></tr></thead><tbody>{}</tbody></table>"
            "<p><a class='button' href='{}'>Create a token</a> (its secret is shown once)</p>",
            rows or mark_safe("<tr><td colspan='5'>No tokens.</td></tr>"),  # constant
            add,
        )


def add_service_errors(form, error: ServiceError, field_names: dict[str, str]) -> None:
    """A service's refusal as form errors: on the fields it names (``field_names`` maps the
    service's names to the form's), else on the whole form."""
    fields = [field_names.get(name, name) for name in error.fields or {}]
    fields = [name for name in fields if name in form.fields] or [None]
    for name in fields:
        form.add_error(name, error.message)


class ApiTokenForm(forms.ModelForm):
    """A new token, made by ``create_api_token`` once the fields are valid (its checks are
    the form's); ``secret`` is the bearer value to show once."""

    scopes = forms.MultipleChoiceField(
        choices=TokenScope.choices, widget=forms.CheckboxSelectMultiple
    )
    secret = ""

    class Meta:
        model = ApiToken
        fields = ["account", "name", "scopes", "expires_at"]

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        try:
            issued = create_api_token(
                data["account"],
                name=data["name"],
                scopes=data["scopes"],
                expires_at=data.get("expires_at"),
            )
        except ServiceError as error:
            add_service_errors(self, error, {})
            return data
        self.instance, self.secret = issued.token, issued.secret
        return data


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = [
        "name",
        "account",
        "key_id",
        "scope_list",
        "expires_at",
        "revoked_at",
        "last_used_at",
    ]
    list_select_related = ["account"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "key_id", "account__slug", "account__name"]
    autocomplete_fields = ["account"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["key_id", "last_used_at"]
        return ["account", "key_id", "scopes", "created_at", "revoked_at", "last_used_at"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["account", "name", "scopes", "expires_at"]
        return [
            "account",
            "name",
            "key_id",
            "scopes",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
        ]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description="scopes")
    def scope_list(self, token):
        return ", ".join(token.scopes)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        # Made by create_api_token when the form was cleaned.
        messages.warning(
            request,
            f"Token secret for {obj.name!r}: {form.secret} — copy it now; it is not shown again.",
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            revoke_api_token(token)
            self.log_change(request, token, "Revoked")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} token(s).")


@admin.register(BuildUsage)
class BuildUsageAdmin(admin.ModelAdmin):
    list_display = [
        "account",
        "month",
        "builds_used",
        "builds_limit",
        "addon_minutes",
        "updated_at",
    ]
    list_select_related = ["account"]
    list_filter = ["month"]
    search_fields = ["account__slug", "account__name"]
    readonly_fields = [
        "account",
        "month",
        "builds_used",
        "builds_limit",
        "addon_minutes",
        "updated_at",
    ]

    def has_add_permission(self, request):
        return False


JOB_SERVICES = {
    # verb in the URL: (service, button text, what it does, message when done)
    "cancel": (lifecycle.cancel_job, "Cancel", "cancel", "Cancelled"),
    "retry": (lifecycle.retry_job, "Retry", "queue again as a new attempt", "Queued again"),
    "run-now": (lifecycle.run_job_now, "Run now", "move to the front of its class", "Moved"),
}
LOG_TAIL = 200


@admin.register(Job)
class JobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Jobs are the record of what ran: cancel them, never delete; verbs call the engine."""

    list_display = [
        "id",
        "kind",
        "account",
        "tier",
        "status",
        "progress",
        "stage",
        "attempts",
        "created_at",
    ]
    list_filter = ["status", "kind", "account__tier", "priority_class", "account", "created_at"]
    list_select_related = ["account"]
    # params and result are searched as text: git refs, app slugs, bundle hashes.
    search_fields = [
        "=id",
        "account__slug",
        "account__name",
        "kind",
        "idempotency_key",
        "params",
        "result",
    ]
    date_hierarchy = "created_at"
    actions = ["cancel", "retry", "run_now"]
    change_form_template = "admin/builds/job/job_page.html"

    @admin.display(description="Tier", ordering="account__tier")
    def tier(self, job):
        return job.account.get_tier_display()

    # --- actions: each confirms first, then calls the engine's service -----------------
    def _each(self, request, queryset, verb):
        service, button, effect, done_text = JOB_SERVICES[verb]
        if request.POST.get("confirmed") != "yes":
            return TemplateResponse(
                request,
                "admin/builds/job/confirm.html",
                {
                    **self.admin_site.each_context(request),
                    "title": f"{button}: are you sure?",
                    "jobs": queryset,
                    "effect": effect,
                    "button": button,
                    "action": request.POST.get("action"),
                    "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                    "opts": self.model._meta,
                },
            )
        done = [job for job in queryset if self._apply(request, job, verb)]
        self.message_user(request, f"{done_text} {len(done)} job(s).")
        return None

    def _apply(self, request, job, verb) -> bool:
        service, button, _, _ = JOB_SERVICES[verb]
        try:
            service(job, by=actor_name(request.user))
        except ServiceError as error:
            self.message_user(request, f"{job.pk}: {error.message}", level=messages.WARNING)
            return False
        self.log_change(request, job, f"{button} (engine service)")
        return True

    @admin.action(description="Cancel selected jobs")
    def cancel(self, request, queryset):
        return self._each(request, queryset, "cancel")

    @admin.action(description="Retry selected failed or timed-out jobs")
    def retry(self, request, queryset):
        return self._each(request, queryset, "retry")

    @admin.action(description="Run selected queued jobs next in their class")
    def run_now(self, request, queryset):
        return self._each(request, queryset, "run-now")

    # --- the job page ---------------------------------------------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view(self.job_action_view)
        return [
            *(
                path(f"<uuid:job_id>/{verb}/", view, {"verb": verb}, name=f"builds_job_{verb}")
                for verb in JOB_SERVICES
            ),
            *super().get_urls(),
        ]

    def job_action_view(self, request, job_id, verb):
        """One job's cancel, retry or run-now: a confirmation page, then the service."""
        job = self.get_object(request, str(job_id))
        if job is None:
            raise Http404
        _, button, effect, done_text = JOB_SERVICES[verb]
        page = reverse("admin:builds_job_change", args=[job.pk])
        if request.method == "POST":
            if self._apply(request, job, verb):
                self.message_user(request, f"{done_text} job {job.pk}.")
            return redirect(page)
        return TemplateResponse(
            request,
            "admin/builds/job/confirm.html",
            {
                **self.admin_site.each_context(request),
                "title": f"{button}: are you sure?",
                "jobs": [job],
                "effect": effect,
                "button": button,
                "back": page,
                "opts": self.model._meta,
            },
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        extra = {}
        if job is not None:
            logs = list(JobLog.objects.filter(job=job).order_by("-seq")[:LOG_TAIL])[::-1]
            extra = {
                "job": job,
                "insight": describe_job(job),
                "log_lines": logs,
                "log_after": logs[-1].seq if logs else 0,
                "log_truncated": bool(logs) and logs[0].seq > 1,
                "artifacts": registry.job_outputs(job),
                "channel": (job.params or {}).get("channel", ""),
                "verbs": available_verbs(job, request.user),
                "ws_url": f"/ws/jobs/{job.pk}/",
            }
        return super().change_view(
            request, object_id, form_url, extra_context={**extra, **(extra_context or {})}
        )


def available_verbs(job, user) -> list[tuple[str, str, str]]:
    """(verb, label, url) of the actions that apply to the job as it is now."""
    verbs = []
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        verbs.append(("cancel", "Cancel job"))
    if job.status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
        verbs.append(("retry", "Retry"))
    if job.status == JobStatus.QUEUED and user.is_staff:
        verbs.append(("run-now", "Run now"))
    return [
        (verb, label, reverse(f"admin:builds_job_{verb}", args=[job.pk])) for verb, label in verbs
    ]


@admin.register(JobLog)
class JobLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["job", "seq", "ts", "level", "message"]
    list_filter = ["level"]
    search_fields = ["=job__id"]
    list_select_related = ["job"]


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "host", "pid", "processes", "state", "started_at", "last_seen"]
    list_filter = ["state", "host"]


class HeatUpForm(forms.ModelForm):
    """A heat-up made by the engine's ``heat_up`` once the fields are valid (its checks are
    the form's); ``by`` is the operator's name, set by the admin."""

    minutes = forms.IntegerField(help_text="How long to keep the workers warm, in minutes.")
    by = ""

    class Meta:
        model = HeatUp
        fields = ["workers"]

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        try:
            self.instance = worker_service.heat_up(
                data["workers"], dt.timedelta(minutes=data["minutes"]), by=self.by
            )
        except ServiceError as error:
            add_service_errors(self, error, {"duration": "minutes"})
        return data


@admin.register(HeatUp)
class HeatUpAdmin(admin.ModelAdmin):
    """Heat-ups are made by the engine's service (here or on the dashboard) and then only
    read; cooling down ends them."""

    list_display = ["workers", "until", "created_at", "created_by", "cancelled_at"]
    readonly_fields = ["workers", "until", "created_at", "created_by", "cancelled_at"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        return ["workers", "minutes"] if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, change=change, **kwargs)
        form = super().get_form(request, obj, change=change, form=HeatUpForm, **kwargs)
        return type(form.__name__, (form,), {"by": request.user.get_username()})

    def save_model(self, request, obj, form, change):
        """Nothing to write: the service made the row when the form was cleaned."""

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("start/", wrap(self.start_view), name="builds_heatup_start"),
            path("cool-down/", wrap(self.cool_down_view), name="builds_heatup_cool_down"),
            *super().get_urls(),
        ]

    def start_view(self, request):
        """The dashboard's heat-up form: the engine's heat-up service, then back."""
        if request.method != "POST" or not self.has_add_permission(request):
            raise PermissionDenied
        try:
            count = int(request.POST.get("workers", ""))
            minutes = int(request.POST.get("minutes", ""))
        except ValueError:
            self.message_user(
                request, "Heat-up needs a number of workers and minutes.", messages.ERROR
            )
            return redirect("admin:index")
        try:
            heat_up = worker_service.heat_up(
                count, dt.timedelta(minutes=minutes), by=request.user.get_username()
            )
        except ServiceError as error:
            self.message_user(request, error.message, messages.ERROR)
            return redirect("admin:index")
        self.log_addition(request, heat_up, f"Heat-up: {count} worker(s) for {minutes} min")
        self.message_user(
            request, f"Heating up: {count} worker(s) kept warm until {heat_up.until:%H:%M %Z}."
        )
        return redirect("admin:index")

    def cool_down_view(self, request):
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        active = list(worker_service.active_heat_ups())
        worker_service.cool_down()
        for heat_up in active:
            self.log_change(request, heat_up, "Cooled down now")
        self.message_user(request, f"Cooled down: {len(active)} heat-up(s) ended.")
        return redirect("admin:index")
