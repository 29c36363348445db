"""Live job progress over a websocket: ``/ws/jobs/{id}/?after=SEQ``.

On connect the client gets a snapshot of the job and the log lines after ``after`` from the
database, then every change the engine pushes after its commits. The consumer joins the
job's group *before* it reads the database, so nothing committed in between is missed; what
arrives twice is dropped by sequence number (``seq`` for log lines, ``state_seq`` for
status), and a log line that jumps ahead is filled in from the database, so the client sees
each line once and in order, across reconnects too.
"""

import json
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from builds.choices import TERMINAL_STATES, TokenScope
from builds.engine import events
from builds.engine.logs import log_message
from builds.models import Job, JobLog, Membership
from builds.services import TokenRejected, authenticate_token

PROTOCOL = "buildhub.jobs.v1"
TOKEN_PROTOCOL_PREFIX = "bearer."
LOG_BATCH = 500


class Close:
    """Close codes; browsers see them only after the handshake, so refusals accept first."""

    DONE = 1000  # the job ended; its final status was the last message
    BAD_REQUEST = 4400  # ?after= is not a whole number >= 0
    UNAUTHENTICATED = 4401  # no session or token, or a bad token
    FORBIDDEN = 4403  # token without builds:read, or an Origin that is not allowed
    NOT_FOUND = 4404  # no such job, or one of another account


class Refused(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def bearer_token(scope) -> str | None:
    """The API token from ``Authorization: Bearer ...`` or a ``bearer.<token>`` subprotocol."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            keyword, _, token = value.decode("latin-1").partition(" ")
            if keyword.lower() != "bearer" or not token.strip():
                raise Refused(Close.UNAUTHENTICATED)
            return token.strip()
    for protocol in scope.get("subprotocols", []):
        if protocol.startswith(TOKEN_PROTOCOL_PREFIX):
            return protocol.removeprefix(TOKEN_PROTOCOL_PREFIX)
    return None


def after_seq(scope) -> int:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after", ["0"])
    if not values[-1].isdigit():
        raise Refused(Close.BAD_REQUEST)
    return int(values[-1])


def authorise(scope, job_id: str) -> Job:
    """The job, if the caller may watch it; else Refused with the close code."""
    token_value = bearer_token(scope)
    user = scope.get("user")
    token = None
    if token_value is not None:
        try:
            token = authenticate_token(token_value)
        except TokenRejected:
            raise Refused(Close.UNAUTHENTICATED) from None
    elif user is None or not user.is_authenticated:
        raise Refused(Close.UNAUTHENTICATED)
    try:
        job = Job.objects.only("pk", "account_id").get(pk=uuid.UUID(job_id))
    except (ValueError, Job.DoesNotExist):
        raise Refused(Close.NOT_FOUND) from None
    if token is not None:
        if not token.has_scope(TokenScope.BUILDS_READ):
            raise Refused(Close.FORBIDDEN)
        if token.account_id != job.account_id:
            raise Refused(Close.NOT_FOUND)  # like the API: another account's job is not found
        return job
    if user.is_staff or Membership.objects.filter(user=user, account_id=job.account_id).exists():
        return job
    raise Refused(Close.NOT_FOUND)


def read_logs(job_id, after: int, until: int | None = None):
    """Log messages after ``after`` (up to ``until``), in batches, oldest first."""
    while True:
        lines = JobLog.objects.filter(job_id=job_id, seq__gt=after)
        if until is not None:
            lines = lines.filter(seq__lte=until)
        batch = [log_message(line) for line in lines.order_by("seq")[:LOG_BATCH]]
        yield from batch
        if len(batch) < LOG_BATCH:
            return
        after = batch[-1]["seq"]


def snapshot(job_id, after: int) -> tuple[dict, list[dict]]:
    job = Job.objects.get(pk=job_id)
    message = {**events.status_message(job), "event": "snapshot"}
    return message, list(read_logs(job_id, after, job.log_seq))


class JobProgressConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.group = None
        self.sent_log_seq = 0
        self.sent_state_seq = -1
        offered = self.scope.get("subprotocols", [])
        self.subprotocol = PROTOCOL if PROTOCOL in offered else None
        try:
            after = after_seq(self.scope)
            job = await database_sync_to_async(authorise)(
                self.scope, self.scope["url_route"]["kwargs"]["job_id"]
            )
        except Refused as refused:
            await self.refuse(refused.code)
            return
        self.job_id = job.pk
        # Join first, then read: a change committed after the read is then in the group.
        self.group = events.job_group(job.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        state, lines = await database_sync_to_async(snapshot)(job.pk, after)
        await self.accept(self.subprotocol)
        self.sent_state_seq = state["state_seq"]
        await self.send(text_data=json.dumps(state))
        self.sent_log_seq = after
        await self.send_logs(lines)
        if state["status"] in TERMINAL_STATES:
            await self.finish()

    async def refuse(self, code: int):
        await self.accept(self.subprotocol)
        await self.close(code)

    async def disconnect(self, code):
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def receive(self, text_data=None, bytes_data=None):
        """Clients only listen; anything they send is ignored."""

    async def job_event(self, event):
        if self.group is None:
            return  # closed already
        message = {key: value for key, value in event.items() if key != "type"}
        if message.get("event") == "log":
            seq = message["seq"]
            if seq <= self.sent_log_seq:
                return  # read from the database already
            if seq > self.sent_log_seq + 1:
                await self.fill_logs(seq)  # lines between are missing: the database has them
            else:
                await self.send_logs([message])
        elif message.get("event") == "status":
            await self.send_status(message)

    async def fill_logs(self, until: int):
        lines = await database_sync_to_async(self.read_missing)(until)
        await self.send_logs(lines)

    def read_missing(self, until: int) -> list[dict]:
        return list(read_logs(self.job_id, self.sent_log_seq, until))

    async def send_logs(self, lines: list[dict]):
        for line in lines:
            if line["seq"] > self.sent_log_seq:
                await self.send(text_data=json.dumps(line))
                self.sent_log_seq = line["seq"]

    async def send_status(self, message: dict):
        if message["state_seq"] <= self.sent_state_seq:
            return  # an older state than the one sent (read before, pushed after)
        if message["log_seq"] > self.sent_log_seq:
            await self.fill_logs(message["log_seq"])  # lines written before this change
        self.sent_state_seq = message["state_seq"]
        await self.send(text_data=json.dumps(message))
        if message["status"] in TERMINAL_STATES:
            await self.finish()

    async def finish(self):
        """The job ended and the client has everything: leave the group and close."""
        await self.channel_layer.group_discard(self.group, self.channel_name)
        self.group = None
        await self.close(Close.DONE)
