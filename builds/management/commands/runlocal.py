import json
import subprocess
import sys
import time
from typing import cast

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from buildhub.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from buildhub.env import env_int, env_str
from buildhub.processes import StopFlag, terminate_all


class Command(BaseCommand):
    help = (
        "Run everything on this machine: the private Redis (unless REDIS_URL is set), "
        "migrations, demo data, the web server (daphne), workers and supervisor. "
        "Ctrl-C stops it all."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=env_str("BUILDHUB_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=env_int("BUILDHUB_PORT", 8000))
        parser.add_argument("--no-seed", action="store_true", help="skip the demo data")

    def handle(self, *args, host, port, no_seed, **options):
        stop = StopFlag()
        private_redis = None
        if settings.USES_EMBEDDED_REDIS:
            private_redis = EmbeddedRedis(settings.EMBEDDED_REDIS_SOCKET)
            if private_redis.is_up():
                self.stdout.write(f"Private Redis already up on {private_redis.socket_path}.")
            else:
                try:
                    private_redis.start()
                except EmbeddedRedisError as error:
                    raise CommandError(str(error)) from None
                self.stdout.write(f"Private Redis started on {private_redis.socket_path}.")
        children = []
        try:
            call_command("migrate", interactive=False, verbosity=0)
            call_command("collectstatic", interactive=False, verbosity=0)
            if not no_seed:
                call_command("seed_demo", quiet_if_seeded=True)
            python = sys.executable
            manage = str(settings.BASE_DIR / "manage.py")
            children = [
                subprocess.Popen(
                    [
                        python,
                        "-m",
                        "daphne",
                        "-b",
                        host,
                        "-p",
                        str(port),
                        "buildhub.asgi:application",
                    ]
                ),
                subprocess.Popen([python, manage, "runworkers"]),
            ]
            self._announce(host, port)
            while not stop.stopping:
                exited = [child for child in children if child.poll() is not None]
                if exited:
                    command = " ".join(cast(list[str], exited[0].args)[1:4])
                    self.stderr.write(
                        f"{command} exited with {exited[0].returncode}; stopping everything."
                    )
                    break
                time.sleep(0.5)
        finally:
            self.stdout.write("Stopping web server and workers...")
            terminate_all(children, grace=35.0)
            if private_redis is not None:
                private_redis.stop()
                self.stdout.write("Private Redis stopped.")
        self.stdout.write("Stopped.")

    def _announce(self, host, port):
        base = f"http://{host}:{port}"
        lines = [
            "",
            f"BuildHub is running at {base}/",
            f"  admin:    {base}/admin/",
            f"  API docs: {base}/api/docs/",
            f"  health:   {base}/healthz",
        ]
        credentials = settings.VAR_DIR / "demo-admin.json"
        if credentials.exists():
            admin = json.loads(credentials.read_text())
            lines.append(f"  admin login: {admin['username']} / {admin['password']}")
            lines.append(f"  API tokens per demo account: {settings.VAR_DIR / 'demo-tokens.json'}")
        lines.append("Press Ctrl-C to stop everything.\n")
        self.stdout.write("\n".join(lines))
