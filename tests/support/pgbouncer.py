"""PgBouncer in transaction mode in front of PostgreSQL, for tests and for local use.

``python -m tests.support.pgbouncer COMMAND...`` (``make test-pgbouncer``) starts one
pgbouncer on a free loopback port in front of ``DATABASE_URL``'s server, runs the command
with ``DATABASE_URL`` pointing at it, ``DATABASE_POOLER=transaction`` and
``JOB_PREPARED_STATEMENTS=false`` (so the processes the tests start go through it too), and
stops it. Without a command it runs in the foreground (under var/pgbouncer/) until Ctrl-C.

The pooler keeps server connections to the databases its clients used, and PostgreSQL
refuses to drop a database with open connections; so the test database is created through
the pooler (pytest ``--reuse-db`` keeps pytest-django from dropping it there) and dropped
straight on PostgreSQL, before and after the run, once the pooler has stopped.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ADMIN_DATABASE = "pgbouncer"  # the admin console's pseudo database
ADMIN_URL_ENV = "BUILDHUB_TEST_PGBOUNCER"  # set for the command: the admin console's URL
POOL_SIZE_ENV = "BUILDHUB_TEST_PGBOUNCER_POOL_SIZE"
# Server connections per database and user. Small, so that the tests run with more clients
# than server connections; large enough for a test that holds one transaction open (pytest's
# django_db) while the worker processes it started claim and finish jobs.
POOL_SIZE = 6
# A run-as user for pgbouncer when started as root (it refuses to run as root).
UNPRIVILEGED_USER = "nobody"


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError("pgbouncer is missing: `make pooler` installs Debian's package")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_with_parent() -> None:
    """A run that is killed does not leave its pooler behind (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _with_address(url: str, host: str, port: int, database: str | None = None) -> str:
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@{host}:{port}" if auth else f"{host}:{port}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def admin_console(admin_url: str, command: str) -> list[dict]:
    """Run a command on a pgbouncer's admin console (SHOW POOLS, SHOW CLIENTS, ...)."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as console:
        cursor = console.execute(command)
        if cursor.description is None:
            return []
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@dataclass
class PgBouncer:
    """One pgbouncer process; ``server_url`` names the PostgreSQL server it pools."""

    directory: Path
    server_url: str
    pool_size: int = POOL_SIZE
    port: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def server(self):
        return urlsplit(self.server_url)

    @property
    def user(self) -> str:
        return self.server.username or "postgres"

    def url(self, database: str | None = None) -> str:
        """``server_url`` (or another database on it) through the pooler."""
        return _with_address(self.server_url, "127.0.0.1", self.port, database)

    @property
    def admin_url(self) -> str:
        return self.url(ADMIN_DATABASE)

    def config(self) -> str:
        server = self.server
        # Any database name a client asks for is pooled on the same server: the test
        # database pytest-django creates, and "postgres", through which it creates it.
        return "\n".join(
            [
                "[databases]",
                f"* = host={server.hostname or '127.0.0.1'} port={server.port or 5432}",
                "",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                "reserve_pool_size = 0",
                "max_client_conn = 500",
                # Loopback, a throwaway server: clients are trusted, as PostgreSQL trusts
                # its own loopback clients here; the user must still be listed.
                "auth_type = trust",
                f"auth_file = {self.directory / 'users.txt'}",
                f"admin_users = {self.user}",
                f"stats_users = {self.user}",
                "",
            ]
        )

    def start(self, timeout: float = 30) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        (self.directory / "users.txt").write_text(f'"{self.user}" ""\n')
        config = self.directory / "pgbouncer.ini"
        config.write_text(self.config())
        command = [pgbouncer_binary()]
        if os.geteuid() == 0:
            # pgbouncer refuses to run as root: it drops to this user after reading its
            # files, which must stay readable to it.
            command += ["--user", UNPRIVILEGED_USER]
            self.directory.chmod(0o755)
        log = open(self.directory / "pgbouncer.log", "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(
            [*command, str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: see {self.directory / 'pgbouncer.log'}")
            try:
                self.admin("SHOW VERSION")
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not come up: {error}") from error
                time.sleep(0.1)
            else:
                return

    def admin(self, command: str) -> list[dict]:
        return admin_console(self.admin_url, command)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # pgbouncer: fast exit
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def drop_database(server_url: str, database: str) -> None:
    """Drop ``database`` on the server itself (never through the pooler)."""
    server = urlsplit(server_url)
    maintenance = _with_address(server_url, server.hostname, server.port or 5432, "postgres")
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def run_behind(command: list[str], server_url: str) -> int:
    """Run ``command`` with its database through a fresh pooler; its exit code."""
    database = urlsplit(server_url).path.lstrip("/")
    test_database = f"test_{database}"  # pytest-django's name for it
    directory = Path(tempfile.mkdtemp(prefix="buildhub-pgbouncer-"))
    pool_size = int(os.environ.get(POOL_SIZE_ENV) or POOL_SIZE)
    pooler = PgBouncer(directory, server_url, pool_size=pool_size)
    drop_database(server_url, test_database)
    try:
        pooler.start()
        print(
            f"{pooler.admin('SHOW VERSION')[0]['version']} on 127.0.0.1:{pooler.port}"
            f" (pool_mode=transaction, {pool_size} server connections per database)",
            flush=True,
        )
        env = {
            **os.environ,
            "DATABASE_URL": pooler.url(),
            "DATABASE_POOLER": "transaction",
            "JOB_PREPARED_STATEMENTS": "false",
            ADMIN_URL_ENV: pooler.admin_url,
            POOL_SIZE_ENV: str(pool_size),
        }
        return subprocess.call(command, env=env)
    finally:
        pooler.stop()
        drop_database(server_url, test_database)
        shutil.rmtree(directory, ignore_errors=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(server_url: str) -> None:
    """In the foreground under var/pgbouncer/ (port PGBOUNCER_PORT, default 6432)."""
    var_dir = Path(os.environ.get("BUILDHUB_VAR_DIR") or Path(__file__).parents[2] / "var")
    pooler = PgBouncer(
        var_dir / "pgbouncer",
        server_url,
        pool_size=int(os.environ.get(POOL_SIZE_ENV) or POOL_SIZE),
        port=int(os.environ.get("PGBOUNCER_PORT") or 6432),
    )
    pooler.start()
    print(
        f"PgBouncer on 127.0.0.1:{pooler.port} in front of {pooler.server.hostname}:"
        f"{pooler.server.port or 5432} (pool_mode=transaction); for BuildHub:\n"
        f"  export DATABASE_URL={pooler.url()} DATABASE_POOLER=transaction\n"
        f"Admin console: psql {pooler.admin_url}\nCtrl-C stops it.",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        pooler.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        pooler.stop()


def main(argv: list[str]) -> int:
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith(("postgres://", "postgresql://")):
        print("DATABASE_URL must name a PostgreSQL database (postgres://...)", file=sys.stderr)
        return 2
    if not argv:
        serve(server_url)
        return 0
    return run_behind(argv, server_url)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
