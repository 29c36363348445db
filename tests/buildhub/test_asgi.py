import pytest
from channels.testing import HttpCommunicator, WebsocketCommunicator

from buildhub.asgi import application


@pytest.mark.django_db(transaction=True)
async def test_asgi_application_serves_http():
    communicator = HttpCommunicator(
        application, "GET", "/healthz", headers=[(b"host", b"localhost")]
    )

    response = await communicator.get_response()
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait()

    assert response["status"] == 200
    assert b'"status": "ok"' in response["body"]


async def test_websocket_from_a_foreign_origin_is_closed_with_4403():
    communicator = WebsocketCommunicator(
        application, "/ws/anything/", headers=[(b"origin", b"https://evil.example")]
    )

    connected, _ = await communicator.connect()
    closed = await communicator.receive_output()
    await communicator.disconnect()

    assert connected is True  # accepted only so that a browser sees the close code
    assert closed == {"type": "websocket.close", "code": 4403}
