"""Following a job until it ends: the progress websocket (``/ws/jobs/{id}/``) when the
``websocket-client`` package is installed and the socket opens, polling the API otherwise.

Either way the caller gets each log line once, in order, and the job's final state. While
the job is queued its place in the queue and ETA are printed now and then (they come from
the job endpoint, which spends the account's read budget, so not too often).
"""

from __future__ import annotations

import json
import time
import urllib.parse

from buildhub_cli.api import EXIT_FAILED, EXIT_USAGE, Client, CliError

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
POLL_SECONDS = 5.0
QUEUE_REFRESH_SECONDS = 30.0
SOCKET_READ_SECONDS = 5.0
RECONNECTS = 5
CLOSE_MESSAGES = {
    4400: ("the progress socket refused the request", EXIT_FAILED),
    4401: ("the token was refused (check BUILDHUB_TOKEN)", EXIT_USAGE),
    4403: ("the token may not read builds (it needs the builds:read scope)", EXIT_USAGE),
    4404: ("no such job for this account", EXIT_USAGE),
}


class WaitTimeout(Exception):
    """The caller's own time limit passed; the job goes on."""


def format_eta(seconds) -> str:
    if seconds is None:
        return "unknown"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def describe_queue(job: dict) -> str:
    parts = ["queued"]
    if job.get("queue_position") is not None:
        parts.append(f"position {job['queue_position']}")
    parts.append(f"ETA {format_eta(job.get('eta_seconds'))}")
    text = ", ".join(parts)
    return f"{text} ({job['waiting_reason']})" if job.get("waiting_reason") else text


class Follower:
    """Prints what happens to one job; ``run()`` returns the job's final status."""

    def __init__(self, client: Client, job_id: str, out, *, deadline=None, after=0, quiet=False):
        self.client = client
        self.job_id = job_id
        self.out = out
        self.deadline = deadline
        self.last_seq = after
        self.quiet = quiet  # log lines only, no status lines (``buildhub logs --follow``)
        self.status = None
        self.last_state = None
        self.last_queue_text = None
        self.queue_checked = 0.0

    # --- printing ----------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def line(self, seq: int, level: str, message: str) -> None:
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        prefix = "" if level.lower() == "info" else f"{level.upper()} "
        self.say(f"{prefix}{message}")

    def state(self, job: dict) -> None:
        self.status = job["status"]
        if self.quiet:
            return
        shown = (job["status"], job.get("stage"))
        if shown != self.last_state:
            self.last_state = shown
            progress = f" {job.get('progress', 0)}%" if job["status"] == "running" else ""
            stage = f": {job['stage']}" if job.get("stage") else ""
            self.say(f"[{job['status']}{progress}{stage}]")

    def queue_insight(self, force=False) -> None:
        """The job's state with its place in the queue and ETA, while it is queued; at most
        every QUEUE_REFRESH_SECONDS."""
        if self.quiet or self.status not in (None, "queued"):
            return
        now = time.monotonic()
        if not force and now - self.queue_checked < QUEUE_REFRESH_SECONDS:
            return
        self.queue_checked = now
        try:
            job = self.client.get(f"/api/v1/jobs/{self.job_id}/")
        except CliError as failure:
            if failure.status == 429:
                return  # the read budget is spent: the position can wait
            raise
        self.state(job)
        if job["status"] == "queued":
            text = describe_queue(job)
            if text != self.last_queue_text:
                self.last_queue_text = text
                self.say(text)

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise WaitTimeout

    # --- the two ways ------------------------------------------------------------------
    def run(self) -> str:
        try:
            import websocket  # noqa: F401 - websocket-client, optional
        except ImportError:
            return self.poll()
        failures = 0
        while True:
            try:
                ended = self.watch_socket()
            except (OSError, ValueError, _socket_errors()) as error:
                failures += 1
                if failures > RECONNECTS:
                    if not self.quiet:
                        self.say(f"(the progress socket keeps failing: {error}; polling instead)")
                    return self.poll()
                time.sleep(min(2**failures, 10))
                continue
            if ended:
                return self.status
            failures = 0  # closed without an end (a restart): reconnect from the last line

    def socket_url(self) -> str:
        parts = urllib.parse.urlsplit(self.client.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        base = parts.path.rstrip("/")
        return f"{scheme}://{parts.netloc}{base}/ws/jobs/{self.job_id}/?after={self.last_seq}"

    def watch_socket(self) -> bool:
        """One connection; True when the job ended, False when the socket closed early."""
        import websocket

        socket = websocket.create_connection(
            self.socket_url(),
            header=[f"Authorization: Bearer {self.client.token}"],
            suppress_origin=True,
            timeout=SOCKET_READ_SECONDS,
        )
        try:
            while True:
                self.check_deadline()
                self.queue_insight()
                try:
                    opcode, data = socket.recv_data(control_frame=True)
                except websocket.WebSocketTimeoutException:
                    continue
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    if code in CLOSE_MESSAGES:
                        message, exit_code = CLOSE_MESSAGES[code]
                        raise CliError(f"Job {self.job_id}: {message}.", exit_code)
                    return self.status in TERMINAL
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                message = json.loads(data)
                if message.get("event") == "log":
                    self.line(message["seq"], message.get("level", "info"), message["message"])
                elif message.get("event") in ("snapshot", "status"):
                    self.state(message)
                    if message["event"] == "snapshot":
                        self.queue_insight(force=True)
        finally:
            socket.close()

    def poll(self) -> str:
        """The logs endpoint until it says the job has finished."""
        self.queue_insight(force=True)
        while True:
            self.check_deadline()
            page = self.client.get_waiting(
                f"/api/v1/jobs/{self.job_id}/logs/?after={self.last_seq}", self.deadline
            )
            for entry in page["lines"]:
                self.line(entry["seq"], entry.get("level", "info"), entry["message"])
            if page["has_more"]:
                continue
            if page["finished"]:
                self.state(self.client.get_waiting(f"/api/v1/jobs/{self.job_id}/"))
                return self.status
            self.queue_insight()
            time.sleep(POLL_SECONDS)


def _socket_errors():
    import websocket

    return websocket.WebSocketException
