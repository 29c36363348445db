import redis

from buildhub.embedded_redis import EmbeddedRedis


def test_private_redis_listens_only_on_its_unix_socket(tmp_path):
    server = EmbeddedRedis(tmp_path / "run" / "redis.sock")
    assert not server.is_up()

    server.start()
    try:
        assert server.is_up()
        client = redis.Redis.from_url(server.url)
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        assert client.config_get("port") == {"port": "0"}
        assert oct(server.socket_path.stat().st_mode)[-3:] == "700"
        client.close()
    finally:
        server.stop()

    assert not server.is_up()
    assert not server.socket_path.exists()
