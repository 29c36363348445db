import logging

from django.conf import settings
from django.core.cache import caches
from django_ratelimit import ALL
from django_ratelimit.core import _get_window, _make_cache_key, _split_rate, get_usage
from rest_framework.throttling import BaseThrottle

from buildhub.metrics import RATE_LIMITED
from buildhub.net import client_ip

logger = logging.getLogger(__name__)


class CacheRateThrottle(BaseThrottle):
    """Per-caller request rate (``API_RATE_LIMIT``) counted in the shared Redis cache, plus the
    per-account budgets a view names for its actions.

    A view may set ``account_rates = {"create": "JOBS_SUBMIT_RATE", ...}``: each value names a
    setting holding a django-ratelimit rate, and the actions naming the same setting share
    one budget per account (a staff session: per user), whichever token makes the request.
    A request takes its share of the budget when it arrives and gives it back when it is
    refused (any 4xx or 5xx answer, see ``AccountBudgetMixin``), so only work done counts.

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
                if group.startswith("account-rate:"):
                    request.account_budget_spent = _budget_cache_key(request, group, key, rate)
            except Exception:  # any cache failure: answer rather than refuse
                logger.warning("rate limit cache unavailable; request allowed", exc_info=True)
                return True
            if usage is not None and usage["should_limit"]:
                self._wait = max(1, usage["time_left"])
                RATE_LIMITED.labels("account" if group.startswith("account-rate:") else "api").inc()
                return False
        return True

    def wait(self):
        return self._wait


def _budget_cache_key(request, group, key, rate) -> str:
    """The django-ratelimit counter ``get_usage`` just counted this request in."""
    value = key(group, request)
    _, period = _split_rate(rate)
    return _make_cache_key(group, _get_window(value, period), rate, value, ALL)


def refund_account_budget(request) -> None:
    """Give back the request's share of its account budget: it was refused, or it queued
    nothing (a repeated ``Idempotency-Key``). At most once per request."""
    cache_key = getattr(request, "account_budget_spent", None)
    if cache_key is None:
        return
    request.account_budget_spent = None
    try:
        caches[settings.RATELIMIT_USE_CACHE].decr(cache_key)
    except ValueError:
        pass  # the window has ended since: the counter is gone with it
    except Exception:  # a cache failure costs the caller one share at most
        logger.warning("rate limit cache unavailable; budget not refunded", exc_info=True)


class AccountBudgetMixin:
    """For views with ``account_rates``: a refused request (400, 403, 404, 409, 429...)
    spends nothing of its account's budget."""

    def finalize_response(self, request, response, *args, **kwargs):
        if response.status_code >= 400:
            refund_account_budget(request)
        return super().finalize_response(request, response, *args, **kwargs)
