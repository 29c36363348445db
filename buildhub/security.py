"""Response headers Django's SecurityMiddleware does not set, and the admin login throttle."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django_ratelimit.core import get_usage

from buildhub.metrics import RATE_LIMITED
from buildhub.net import client_ip


class ContentSecurityPolicyMiddleware:
    """``Content-Security-Policy`` (``CONTENT_SECURITY_POLICY``) on every HTML page.

    The admin, its live pages and the API docs load scripts, styles, images and websockets
    from this origin only; nothing inline runs and no other site may frame them. JSON answers
    are not documents a browser renders, so they carry only ``frame-ancestors``.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            content_type = response.get("Content-Type", "")
            policy = (
                settings.CONTENT_SECURITY_POLICY
                if content_type.startswith("text/html")
                else "frame-ancestors 'none'"
            )
            response["Content-Security-Policy"] = policy
        return response


def _ip_key(group, request) -> str:
    return f"ip:{client_ip(request)}"


def _ip_username_key(group, request) -> str:
    username = (request.POST.get("username") or "").strip().lower()
    return f"ip:{client_ip(request)}:user:{username}"


# Failures per (address, username) stop guessing one account's password; failures per address
# alone stop one client from walking through many usernames.
_LOGIN_LIMITS = (
    ("admin-login-user", _ip_username_key, "ADMIN_LOGIN_FAILURES_PER_USER"),
    ("admin-login-ip", _ip_key, "ADMIN_LOGIN_FAILURES_PER_IP"),
)


def _login_failures(request, *, increment: bool) -> int | None:
    """Seconds until the caller may try again when a failure budget is spent, else None."""
    waits = []
    for group, key, setting in _LOGIN_LIMITS:
        usage = get_usage(
            request, group=group, key=key, rate=getattr(settings, setting), increment=increment
        )
        if usage is None:
            continue
        if usage["count"] >= usage["limit"]:
            waits.append(max(1, usage["time_left"]))
    return max(waits) if waits else None


def throttled_admin_login(request, extra_context=None):
    """The admin login, refusing with 429 after too many failed sign-ins.

    Only failures count (a wrong password re-renders the form with 200); a success is a
    redirect. Once a budget is spent every attempt from that address (and username) is refused
    without checking the password until its window ends.
    """
    if request.method == "POST":
        wait = _login_failures(request, increment=False)
        if wait is not None:
            return _refusal(request, wait)
    response = admin.site.login(request, extra_context)
    failed = response.status_code == 200 and not request.user.is_authenticated
    if request.method == "POST" and failed:
        _login_failures(request, increment=True)
    return response


def _refusal(request, wait: int) -> HttpResponse:
    RATE_LIMITED.labels("admin_login").inc()
    response = TemplateResponse(
        request,
        "admin/login_throttled.html",
        {**admin.site.each_context(request), "title": "Too many sign-in attempts", "wait": wait},
        status=429,
    )
    response["Retry-After"] = str(wait)
    return response
