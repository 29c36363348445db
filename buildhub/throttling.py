import logging

from django.conf import settings
from django_ratelimit.core import get_usage
from rest_framework.throttling import BaseThrottle

from buildhub.net import client_ip

logger = logging.getLogger(__name__)


class CacheRateThrottle(BaseThrottle):
    """Per-caller request rate (``API_RATE_LIMIT``) counted in the shared Redis cache.

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

    def allow_request(self, request, view) -> bool:
        self._wait = None
        try:
            usage = get_usage(
                request,
                group=self.group,
                key=self.caller_key,
                rate=self._rate(view),
                increment=True,
            )
        except Exception:  # noqa: BLE001 - any cache failure: answer rather than refuse
            logger.warning("rate limit cache unavailable; request allowed", exc_info=True)
            return True
        if usage is None or not usage["should_limit"]:
            return True
        self._wait = max(1, usage["time_left"])
        return False

    def wait(self):
        return self._wait
