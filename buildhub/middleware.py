import logging

from django.http import JsonResponse

from buildhub.errors import code_for_status, error_body

logger = logging.getLogger("buildhub.api")

_MESSAGES = {
    404: "Not found.",
    405: "Method not allowed.",
    413: "The request body is too large.",
    500: "Internal server error.",
}


class ApiErrorMiddleware:
    """Under /api/, answers that Django (not DRF) produced become the JSON error shape.

    This covers unknown URLs, errors raised outside DRF views and unhandled exceptions:
    an API client never sees an HTML page or a traceback.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    @staticmethod
    def _is_api(request) -> bool:
        return request.path.startswith("/api/")

    def __call__(self, request):
        response = self.get_response(request)
        if not self._is_api(request) or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        status = response.status_code
        message = _MESSAGES.get(status) or response.reason_phrase or "Error."
        replacement = JsonResponse(error_body(code_for_status(status), message), status=status)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                replacement[header] = response[header]
        return replacement

    def process_exception(self, request, exception):
        if not self._is_api(request):
            return None
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return JsonResponse(error_body("server_error", _MESSAGES[500]), status=500)
