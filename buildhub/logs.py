"""Process logs: one event per line, JSON in production, with the ids of what was going on.

The request, job, account and worker a line belongs to are kept in context variables that
the request middleware, the API token authentication and the job runner set; a filter copies
them onto every record, so any logger's line carries them. Messages are redacted as job log
lines are (API tokens, Authorization headers, ``password=``-style values).
"""

import contextvars
import datetime as dt
import json
import logging
import re
import uuid

from buildhub.redaction import redact

CONTEXT_FIELDS = ("request_id", "job_id", "account_id", "worker_id")
_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(name, default=None) for name in CONTEXT_FIELDS
}


def bind(**values) -> dict:
    """Set context fields for what follows in this context (thread, task); returns tokens
    for ``unbind``."""
    return {name: _context[name].set(None if v is None else str(v)) for name, v in values.items()}


def unbind(tokens: dict) -> None:
    for name, token in tokens.items():
        _context[name].reset(token)


def current() -> dict:
    return {name: var.get() for name, var in _context.items() if var.get() is not None}


class ContextFilter(logging.Filter):
    """Puts the context fields on each record (``None`` where they do not apply)."""

    def filter(self, record):
        for name, var in _context.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


def _message(record) -> str:
    message = record.getMessage()
    if record.exc_info:
        message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
    return redact(message)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the context fields set."""

    def format(self, record):
        event = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value
        return json.dumps(event, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable lines for development: time, level, logger, message, then the context
    fields set."""

    def format(self, record):
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {_message(record)}"
        fields = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        )
        return f"{line} [{fields}]" if fields else line


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_for(given: str) -> str:
    """A request's id: the caller's ``X-Request-ID`` value when it is a plain token, else a
    new one (the update checks answered in front of Django use this too)."""
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    """Each request's id: the caller's ``X-Request-ID`` when it is a plain token, else a new
    one; in every log line of the request and returned in the response's ``X-Request-ID``.

    Bound and not unbound: Django logs a failed request's line after the middleware returns,
    and each request runs in a context of its own (an ASGI task), so nothing carries over.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID", ""))
        request.request_id = request_id
        bind(request_id=request_id, account_id=None)  # the API token's account is bound later
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
