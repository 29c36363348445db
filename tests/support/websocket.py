"""Job progress websockets in tests: a job and a token to watch it with, a socket opened
on the ASGI application in the test process, and what it receives or closes with."""

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from buildhub.asgi import application
from builds.choices import TokenScope
from builds.services import create_api_token
from tests.builds.engine_helpers import queue_jobs, worker
from tests.support.accounts import make_account

WAIT = 10  # seconds a message may take on a busy machine; not an assertion of speed


@sync_to_async
def a_job(tier="pro", name="Watch Co"):
    account = make_account(tier, name)
    worker()
    return queue_jobs(account)[0]


@sync_to_async
def a_token(account, scopes=(TokenScope.BUILDS_READ,)):
    return create_api_token(account, name="watch", scopes=list(scopes)).secret


def communicator_for(
    job_id, *, token=None, session=None, after=None, origin=b"http://localhost", protocols=()
):
    path = f"/ws/jobs/{job_id}/" + (f"?after={after}" if after is not None else "")
    headers = [(b"host", b"localhost")]
    if origin is not None:
        headers.append((b"origin", origin))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if session is not None:
        headers.append((b"cookie", f"sessionid={session}".encode()))
    return WebsocketCommunicator(application, path, headers=headers, subprotocols=list(protocols))


async def open_socket(job_id, **options):
    communicator = communicator_for(job_id, **options)
    connected, _ = await communicator.connect(timeout=WAIT)
    assert connected
    return communicator


async def receive(communicator, count):
    return [await communicator.receive_json_from(timeout=WAIT) for _ in range(count)]


async def close_code(communicator):
    """The code the server closed with; the client then completes the closing handshake."""
    message = await communicator.receive_output(timeout=WAIT)
    assert message["type"] == "websocket.close"
    await communicator.disconnect(message["code"], timeout=WAIT)
    return message["code"]


async def refused_with(job_id, **options):
    communicator = communicator_for(job_id, **options)
    connected, _ = await communicator.connect(timeout=WAIT)
    assert connected  # accepted so that browsers see the code, then closed at once
    return await close_code(communicator)
