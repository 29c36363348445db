from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from abuse import services
from abuse.choices import FlagStatus, PatternKind
from abuse.models import AbuseSignal, ConfirmedPattern, Flag, ReviewAction, Score
from buildhub.admin import ReadOnlyAdminMixin
from buildhub.errors import ServiceError
from builds.models import Account, Job

LINKED_SHOWN = 25
RECENT_BUILDS = 5
RECENT_SIGNALS = 20


def account_link(account) -> str:
    url = reverse("admin:builds_account_change", args=[account.pk])
    return format_html('<a href="{}">{}</a> ({})', url, account.name, account.slug)


def html_table(headers: list[str], rows) -> str:
    """A plain table for a read-only admin field; every cell is escaped."""
    header = format_html_join("", "<th>{}</th>", ((name,) for name in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, body)


def recent_jobs_by_account(account_ids, per_account=RECENT_BUILDS) -> dict[int, list[Job]]:
    """The newest jobs of each account in one query (a window function, not one per row)."""
    ranked = (
        Job.objects.filter(account_id__in=account_ids)
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("account_id")], order_by=F("created_at").desc()
            )
        )
        .filter(rank__lte=per_account)
        .only("id", "account_id", "kind", "status", "created_at")
        .order_by("account_id", "-created_at")
    )
    jobs: dict[int, list[Job]] = {}
    for job in ranked:
        jobs.setdefault(job.account_id, []).append(job)
    return jobs


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text="Kept in the audit trail with your name and the time.",
    )

    def __init__(self, *args, flag, **kwargs):
        super().__init__(*args, **kwargs)
        self.flag = flag


class ConfirmPatternForm(ReasonForm):
    patterns = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["patterns"].choices = [
            (
                f"{kind}:{value}",
                f"{PatternKind(kind).label} {value} (used by {others} other accounts)",
            )
            for kind, value, others in services.pattern_choices(self.flag.account)
        ]

    def clean_patterns(self) -> list[tuple[str, str]]:
        return [tuple(choice.split(":", 1)) for choice in self.cleaned_data["patterns"]]


class QueueFilter(admin.SimpleListFilter):
    """The review queue shows open flags unless another status is asked for."""

    title = "status"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [*((s.value, s.label) for s in FlagStatus if s != FlagStatus.OPEN), ("all", "All")]

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Open",
        }
        for value, label in self.lookup_choices:
            yield {
                "selected": self.value() == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset.filter(status=FlagStatus.OPEN)
        if value == "all":
            return queryset
        return queryset.filter(status=value)


@admin.register(Flag)
class FlagAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The review queue: open flags by score; each page shows the evidence and the actions."""

    list_display = ["account_name", "score", "priority", "status", "rules", "created_at"]
    list_filter = [QueueFilter, "priority"]
    list_select_related = ["account__abuse_score"]
    search_fields = ["account__slug", "account__name"]
    ordering = ["-score", "created_at"]
    change_form_template = "admin/abuse/flag/change_form.html"
    fields = [
        "account_summary",
        "status",
        "priority",
        "score",
        "created_at",
        "resolved_at",
        "resolved_by",
        "resolution_reason",
        "breakdown_table",
        "linked_accounts_table",
        "recent_signals",
        "history",
    ]
    readonly_fields = fields

    @admin.display(description="account", ordering="account__name")
    def account_name(self, flag):
        return flag.account.name

    @admin.display(description="rules")
    def rules(self, flag):
        return ", ".join(
            f"{rule['label']} +{rule['points']}" for rule in flag.current_breakdown.get("rules", [])
        )

    @admin.display(description="account")
    def account_summary(self, flag):
        account = flag.account
        return format_html(
            "{} — {} tier, created {}, {}",
            account_link(account),
            account.get_tier_display(),
            f"{account.created_at:%Y-%m-%d %H:%M} UTC",
            "blocked" if account.blocked else "active",
        )

    @admin.display(description="score breakdown")
    def breakdown_table(self, flag):
        rules = flag.current_breakdown.get("rules", [])
        if not rules:
            return "No rule applies."
        return html_table(
            ["rule", "points", "detail", "linked accounts"],
            (
                (
                    rule["label"],
                    f"+{rule['points']}",
                    rule["detail"],
                    ", ".join(f"#{pk}" for pk in rule["accounts"][:LINKED_SHOWN]),
                )
                for rule in rules
            ),
        )

    @admin.display(description="linked accounts and their recent builds")
    def linked_accounts_table(self, flag):
        linked_ids = flag.current_breakdown.get("linked_accounts", [])[:LINKED_SHOWN]
        if not linked_ids:
            return "None."
        accounts = Account.objects.filter(pk__in=linked_ids).select_related("abuse_score")
        jobs = recent_jobs_by_account(linked_ids)

        def row(account):
            score = getattr(account, "abuse_score", None)
            builds = format_html_join(
                mark_safe("<br>"),
                "{} {} {}",
                (
                    (job.kind, job.get_status_display(), f"{job.created_at:%Y-%m-%d %H:%M}")
                    for job in jobs.get(account.pk, [])
                ),
            )
            return (
                f"#{account.pk}",
                account_link(account),
                f"{account.created_at:%Y-%m-%d}",
                "blocked" if account.blocked else "active",
                score.score if score else "—",
                builds or "none",
            )

        return html_table(
            ["id", "account", "created", "state", "score", "recent builds"],
            (row(account) for account in accounts),
        )

    @admin.display(description="recent signals of this account")
    def recent_signals(self, flag):
        return html_table(
            ["when", "kind", "IP", "app name", "bundle"],
            (
                (
                    f"{signal.created_at:%Y-%m-%d %H:%M:%S}",
                    signal.get_kind_display(),
                    signal.ip or "—",
                    signal.app_name or "—",
                    signal.bundle_hash or "—",
                )
                for signal in AbuseSignal.objects.filter(account_id=flag.account_id)[
                    :RECENT_SIGNALS
                ]
            ),
        )

    @admin.display(description="review history of this account")
    def history(self, flag):
        actions = ReviewAction.objects.filter(account_id=flag.account_id)
        return html_table(
            ["when", "decision", "by", "why"],
            (
                (
                    f"{action.created_at:%Y-%m-%d %H:%M}",
                    action.get_action_display(),
                    action.actor_name,
                    action.reason,
                )
                for action in actions
            ),
        )

    # --- review actions: each a confirmation page that posts to one service ---------------
    def get_urls(self):
        views = [
            ("dismiss", self.dismiss_view),
            ("confirm", self.confirm_view),
            ("unblock", self.unblock_view),
        ]
        return [
            path(
                f"<int:flag_id>/{name}/",
                self.admin_site.admin_view(view),
                name=f"abuse_flag_{name}",
            )
            for name, view in views
        ] + super().get_urls()

    def _review(self, request, flag_id, *, form_class, perform, page):
        """A confirmation page (GET, or a POST that does not validate) or the done action.

        ``perform(flag, form, user)`` calls one service and returns the message to show;
        ``page(flag)`` gives the page's title, consequence and button.
        """
        if not request.user.has_perm("abuse.change_flag"):
            raise PermissionDenied
        flag = get_object_or_404(Flag.objects.select_related("account__abuse_score"), pk=flag_id)
        form = form_class(request.POST or None, flag=flag)
        if request.method == "POST" and form.is_valid():
            try:
                message = perform(flag, form.cleaned_data, request.user)
            except ServiceError as error:
                form.add_error(None, error.message)
            else:
                self.log_change(request, flag, message)
                self.message_user(request, message)
                return redirect("admin:abuse_flag_change", flag.pk)
        title, consequence, button = page(flag)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "flag": flag,
            "form": form,
            "consequence": consequence,
            "button": button,
        }
        return TemplateResponse(request, "admin/abuse/flag/review_action.html", context)

    def dismiss_view(self, request, flag_id):
        def perform(flag, data, user):
            services.dismiss_flag(flag, user, data["reason"])
            return f"Dismissed the flag on {flag.account}."

        return self._review(
            request,
            flag_id,
            form_class=ReasonForm,
            perform=perform,
            page=lambda flag: (
                f"Dismiss the flag on {flag.account}",
                "The account stays active and leaves the queue. It is flagged again only if "
                f"its score rises above {flag.score}.",
                "Dismiss",
            ),
        )

    def confirm_view(self, request, flag_id):
        def perform(flag, data, user):
            services.confirm_pattern_and_block(flag, user, data["reason"], data["patterns"])
            return f"Confirmed the pattern and blocked {flag.account}."

        return self._review(
            request,
            flag_id,
            form_class=ConfirmPatternForm,
            perform=perform,
            page=lambda flag: (
                f"Confirm a pattern and block {flag.account}",
                f"{flag.account} is blocked now: its submissions are refused and its queued "
                "jobs wait. From now on, any account scoring above the block threshold that "
                "matches a confirmed pattern is blocked automatically when it is scored.",
                "Confirm and block",
            ),
        )

    def unblock_view(self, request, flag_id):
        def perform(flag, data, user):
            services.unblock_account(flag.account, user, data["reason"])
            return f"Unblocked {flag.account}."

        return self._review(
            request,
            flag_id,
            form_class=ReasonForm,
            perform=perform,
            page=lambda flag: (
                f"Unblock {flag.account}",
                "The account may submit again and its queued jobs become eligible to run. "
                "Patterns confirmed before now no longer block it by themselves.",
                "Unblock",
            ),
        )


@admin.register(AbuseSignal)
class AbuseSignalAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "account", "job", "ip", "app_name", "bundle_hash"]
    list_filter = ["kind"]
    list_select_related = ["account"]
    search_fields = ["=bundle_hash", "=ip", "account__slug", "app_name"]
    date_hierarchy = "created_at"


@admin.register(Score)
class ScoreAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "score", "computed_at"]
    list_select_related = ["account"]
    search_fields = ["account__slug", "account__name"]


@admin.register(ConfirmedPattern)
class ConfirmedPatternAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["kind", "value", "confirmed_by", "confirmed_at", "flag"]
    list_filter = ["kind"]
    list_select_related = ["confirmed_by", "flag"]
    search_fields = ["=value"]


@admin.register(ReviewAction)
class ReviewActionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "action", "account", "actor_name", "reason", "score"]
    list_filter = ["action"]
    list_select_related = ["account"]
    search_fields = ["account__slug", "actor_name"]
