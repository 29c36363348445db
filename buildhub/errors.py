"""The one error type services raise for a caller to see, and its JSON shape."""

_STATUS_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "server_error",
    503: "unavailable",
}


def code_for_status(status_code: int) -> str:
    return _STATUS_CODES.get(status_code, "error")


class ServiceError(Exception):
    """A refusal a caller can act on; rendered as ``{"error": {...}}`` with ``status``."""

    status = 400
    code = "invalid"

    def __init__(self, message, *, code=None, status=None, fields=None, headers=None, extra=None):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.fields = fields or {}
        self.headers = headers or {}
        self.extra = extra or {}


def error_body(code: str, message: str, fields=None, extra: dict | None = None) -> dict:
    error = {"code": code, "message": message, **(extra or {})}
    if fields:
        error["fields"] = fields
    return {"error": error}
