"""Shared API plumbing: the error shape, pagination and rate limiting for every app."""

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import set_rollback

from buildhub.errors import ServiceError, code_for_status, error_body
from buildhub.metrics import RATE_LIMITED


def _field_messages(detail) -> dict | list | str:
    if isinstance(detail, dict):
        return {key: _field_messages(value) for key, value in detail.items()}
    if isinstance(detail, list):
        flat = [_field_messages(item) for item in detail]
        return flat if any(not isinstance(item, str) for item in flat) else " ".join(flat)
    return str(detail)


def _from_api_exception(exc: exceptions.APIException) -> tuple[int, dict]:
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        fields = _field_messages(detail)
        first = next(iter(fields.items()))
        message = (
            f"Invalid input: {first[0]}: {first[1]}"
            if isinstance(first[1], str)
            else ("Invalid input.")
        )
        return exc.status_code, error_body("invalid", message, fields)
    code = exc.get_codes() if isinstance(exc.get_codes(), str) else None
    if isinstance(exc, exceptions.Throttled):
        code = "rate_limited"
    return exc.status_code, error_body(code or code_for_status(exc.status_code), str(exc.detail))


def exception_handler(exc, context):
    """DRF exception handler: every refusal in the ``{"error": {...}}`` shape."""
    headers = {}
    if isinstance(exc, ServiceError):
        status_code = exc.status
        body = error_body(exc.code, exc.message, exc.fields, exc.extra)
        headers.update(exc.headers)
    elif isinstance(exc, RequestDataTooBig):
        status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        body = error_body("payload_too_large", "The request body is too large.")
    elif isinstance(exc, Ratelimited):
        status_code = status.HTTP_429_TOO_MANY_REQUESTS
        body = error_body("rate_limited", "Too many requests; slow down.")
        headers["Retry-After"] = "60"
        RATE_LIMITED.labels("api").inc()
    elif isinstance(exc, Http404):
        status_code, body = 404, error_body("not_found", "Not found.")
    elif isinstance(exc, PermissionDenied):
        status_code, body = 403, error_body("permission_denied", "Permission denied.")
    elif isinstance(exc, exceptions.APIException):
        status_code, body = _from_api_exception(exc)
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None) is not None:
            headers["Retry-After"] = str(max(1, int(exc.wait)))
    else:
        return None
    set_rollback()
    return Response(body, status=status_code, headers=headers)


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
