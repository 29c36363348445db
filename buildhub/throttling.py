import logging

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework.throttling import BaseThrottle

from buildhub.net import client_ip

logger = logging.getLogger(__name__)


class CacheRateThrottle(BaseThrottle):
    """Per-caller request rate (``API_RATE_LIMIT``) counted in the shared Redis cache, plus the
    per-account budgets a view names for its actions.

    A view may set ``account_rates = {"create": "JOBS_SUBMIT_RATE", ...}``: each value names a
    setting holding a django-ratelimit rate, and the actions naming the same setting share
    one budget per account (a staff session: per user), whichever token makes the request.

    Fails open: when Redis is unreachable the API keeps answering, since the database and
    not the cache is what a request needs.
    """

    group = "api"

    def _rate(self, view) -> str:
        return getattr(view, "rate_limit", None) or settings.API_RATE_LIMIT

    @staticmethod
    def caller_key(group, request) -> str:
        token = getattr(request, "auth", None)
        if token is not None and getattr(token, "pk", None):
            return f"token:{token.pk}"
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"ip:{client_ip(request)}"

    @classmethod
    def account_key(cls, group, request) -> str:
        account_id = getattr(getattr(request, "auth", None), "account_id", None)
        return f"account:{account_id}" if account_id else cls.caller_key(group, request)

    @staticmethod
    def account_rate_setting(view) -> str | None:
        rates = getattr(view, "account_rates", None) or {}
        return rates.get(getattr(view, "action", None) or view.request.method.lower())

    def _limits(self, view):
        yield self.group, self.caller_key, self._rate(view)
        setting = self.account_rate_setting(view)
        if setting:
            yield f"account-rate:{setting}", self.account_key, getattr(settings, setting)

    def allow_request(self, request, view) -> bool:
        self._wait = None
        for group, key, rate in self._limits(view):
            try:
                usage = get_usage(request, group=group, key=key, rate=rate, increment=True)
            except Exception:  # noqa: BLE001 - any cache failure: answer rather than refuse
                logger.warning("rate limit cache unavailable; request allowed", exc_info=True)
                return True
            if usage is not None and usage["should_limit"]:
                self._wait = max(1, usage["time_left"])
                return False
        return True

    def wait(self):
        return self._wait
