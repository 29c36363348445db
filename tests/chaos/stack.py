"""The chaos drill's private stack: its own PostgreSQL cluster and Redis, daphne, runworkers.

Everything lives under var/chaos/ and listens on loopback ports picked free at start (or a
unix socket), so the faults injected here (stopping Redis, restarting PostgreSQL) never touch
the machine's shared servers.
"""

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

from buildhub.embedded_redis import EmbeddedRedis
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]


def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("initdb not found: install PostgreSQL (apt-get install postgresql)")


class PrivatePostgres:
    """A throw-away cluster (initdb + pg_ctl) on a free loopback port; trust auth for postgres."""

    def __init__(self, base: Path):
        self.base = base.resolve()
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and not self._postgres_can_enter(self.base):
            # A checkout under e.g. /root, which the postgres user cannot enter.
            self.base = Path(tempfile.mkdtemp(prefix="buildhub-chaos-pg-"))
            self.base.chmod(0o755)
        self.data = self.base / "pg-data"
        self.sockets = self.base / "pg-run"
        self.log = self.base / "pg.log"
        self.port = free_port()
        self.bin = postgres_bin()

    @staticmethod
    def _postgres_can_enter(path: Path) -> bool:
        probe = ["runuser", "-u", "postgres", "--", "test", "-x", str(path)]
        return subprocess.run(probe, check=False).returncode == 0

    def _run(self, *args: str, check: bool = True) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        # Output to the log, not a pipe: the server pg_ctl starts would hold a pipe open.
        with open(self.base / "pg_ctl.log", "ab") as log:
            subprocess.run(command, check=check, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def init(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)
        for path in (self.data, self.sockets):
            path.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        if os.geteuid() == 0:
            for path in (self.data, self.sockets, self.log):
                shutil.chown(path, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def restart(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "restart"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        if self.base.name.startswith("buildhub-chaos-pg-"):
            shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self, name: str) -> str:
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"


class PrivateRedis(EmbeddedRedis):
    """A redis-server on a unix socket under var/chaos/ (never the machine's shared Redis)."""


class Services:
    """daphne (web) and the worker supervisor as subprocesses, each in its own session."""

    def __init__(self, env: dict, logs: Path):
        self.env = env
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.web: subprocess.Popen | None = None
        self.supervisor: subprocess.Popen | None = None
        self._files = []

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._files.append(log)
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_web(self) -> None:
        self.web = self._start(
            "daphne",
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "buildhub.asgi:application",
            ],
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.web.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # 503 "degraded" is up too
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("daphne did not answer /healthz in time")

    def stop_web(self) -> None:
        stop_group(self.web)

    def start_supervisor(self, clusters: int) -> None:
        self.supervisor = self._start(
            "supervisor",
            [sys.executable, "manage.py", "runworkers", "--clusters", str(clusters)],
        )

    def stop(self) -> None:
        stop_group(self.supervisor, grace=60)
        stop_group(self.web)
        for log in self._files:
            log.close()
        self._files = []

    def kill(self) -> int:
        """kill -9 of everything this node runs: web, supervisor, workers and their children,
        whatever process group or session a child moved to. Returns how many processes."""
        roots = [p.pid for p in (self.web, self.supervisor) if p is not None and p.poll() is None]
        tree = process_tree(roots)
        groups = set()
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in (self.web, self.supervisor):
            if process is not None:
                process.wait()
        for log in self._files:
            log.close()
        self._files = []
        return len(tree)

    def pids(self) -> set[int]:
        """Every process of this node now (the web's and the supervisor's trees)."""
        roots = [p.pid for p in (self.web, self.supervisor) if p is not None and p.poll() is None]
        return set(process_tree(roots))


def process_tree(roots: list[int]) -> list[int]:
    """The roots and all their descendants (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, waiting = [], list(roots)
    while waiting:
        pid = waiting.pop(0)
        if pid not in found:
            found.append(pid)
            waiting.extend(children.get(pid, []))
    return found


def stop_group(process: subprocess.Popen | None, grace: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
