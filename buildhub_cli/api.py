"""BuildHub's HTTP API from the standard library: JSON in and out, its error shape as
exceptions that carry the command's exit code."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from buildhub_cli import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
TIMEOUT = 60.0
CHUNK = 1024 * 1024


class CliError(Exception):
    """A message for the user and the exit code it means (never a traceback)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, *, status=None, code=""):
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status
        self.code = code
        self.retry_after = None


def error_from_response(status: int, body: bytes, headers) -> CliError:
    """The server's ``{"error": {"code", "message", "fields"}}`` as one readable message."""
    try:
        error = json.loads(body or b"{}").get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    message = error.get("message") or f"the server answered HTTP {status}"
    fields = error.get("fields") or {}
    if fields:
        message += "".join(f"\n  {name}: {detail}" for name, detail in fields.items())
    if status in (401, 403) or (400 <= status < 500 and status not in (408, 409, 410, 429)):
        exit_code = EXIT_USAGE
    else:
        exit_code = EXIT_FAILED
    if status == 401:
        message = f"{message} (check BUILDHUB_TOKEN)"
    failure = CliError(message, exit_code, status=status, code=error.get("code", ""))
    retry_after = headers.get("Retry-After") if headers is not None else None
    if retry_after and retry_after.isdigit():
        failure.retry_after = int(retry_after)
        if status == 429:
            failure.args = (f"{message} Try again in {retry_after} s.",)
    return failure


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # downloads follow the link themselves, without the token


class Client:
    def __init__(self, url: str | None = None, token: str | None = None):
        url = url if url is not None else os.environ.get("BUILDHUB_URL", "")
        token = token if token is not None else os.environ.get("BUILDHUB_TOKEN", "")
        if not url:
            raise CliError(
                "Set BUILDHUB_URL to the BuildHub server, e.g. https://buildhub.example.com",
                EXIT_USAGE,
            )
        if not token:
            raise CliError(
                "Set BUILDHUB_TOKEN to an API token of your account (bh_...).", EXIT_USAGE
            )
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"BUILDHUB_URL must be an http(s) URL, not {url!r}.", EXIT_USAGE)
        self.url = url.rstrip("/")
        self.token = token
        self.opener = urllib.request.build_opener(_NoRedirect)

    def absolute(self, path: str) -> str:
        return path if "://" in path else f"{self.url}{path}"

    def request(self, method, path, body=None, *, headers=None, data=None, raw=False):
        all_headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            "User-Agent": f"buildhub-cli/{__version__}",
            **(headers or {}),
        }
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.absolute(path), data=data, method=method, headers=all_headers
        )
        try:
            response = self.opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            if 300 <= error.code < 400 and raw:
                return error
            raise error_from_response(error.code, error.read(), error.headers) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CliError(f"Could not reach BuildHub at {self.url}: {reason}") from None
        if raw:
            return response
        with response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body=None, **kwargs):
        return self.request("POST", path, body if body is not None else {}, **kwargs)

    def get_waiting(self, path, deadline=None):
        """A read that waits out the account's read budget (429 with Retry-After)."""
        while True:
            try:
                return self.get(path)
            except CliError as failure:
                if failure.status != 429 or failure.retry_after is None:
                    raise
                if deadline is not None and time.monotonic() + failure.retry_after > deadline:
                    raise
                time.sleep(failure.retry_after)

    def upload(self, path: str, filename: str, handle, size: int):
        """POST a file as the multipart field ``file``, streamed from ``handle``."""
        headers, chunks = multipart_body({}, filename, handle, size)
        return self.request("POST", path, data=chunks, headers=headers)

    def send_form(self, form: dict, filename: str, handle, size: int) -> None:
        """Send a file with a direct upload's form straight to the bucket it names (the
        token is not sent there)."""
        headers, chunks = multipart_body(form["fields"], filename, handle, size)
        request = urllib.request.Request(
            form["url"], data=chunks, method=form.get("method", "POST"), headers=headers
        )
        try:
            urllib.request.urlopen(request, timeout=TIMEOUT).close()  # http(s) form
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode("utf-8", "replace")
            raise CliError(
                f"The storage refused the upload (HTTP {error.code}): {detail}"
            ) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CliError(f"Could not upload to {form['url']}: {reason}") from None

    def download(self, path: str, target) -> None:
        """Follow the download redirect to the signed link (no token sent there)."""
        response = self.request("GET", path, raw=True)
        location = (
            response.headers.get("Location") if response.status in (301, 302, 303, 307) else None
        )
        source = response
        if location:
            link = urllib.parse.urljoin(self.absolute(path), location)
            try:
                source = urllib.request.urlopen(link, timeout=TIMEOUT)  # http(s) link
            except urllib.error.HTTPError as error:
                raise error_from_response(error.code, error.read(), error.headers) from None
            except (urllib.error.URLError, OSError) as error:
                raise CliError(
                    f"Could not download {link}: {getattr(error, 'reason', error)}"
                ) from None
        with source:
            while chunk := source.read(CHUNK):
                target.write(chunk)


def multipart_body(fields: dict, filename: str, handle, size: int):
    """Headers and a streamed multipart/form-data body: ``fields``, then ``handle``'s
    ``size`` bytes as the file field ``file`` (last, as S3's form uploads require)."""
    boundary = f"buildhub-{uuid.uuid4().hex}"
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    head_bytes, tail = head.encode(), f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        yield head_bytes
        while chunk := handle.read(CHUNK):
            yield chunk
        yield tail

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head_bytes) + size + len(tail)),
    }
    return headers, chunks()
