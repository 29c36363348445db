"""A large source upload on S3 storage: the web process's memory and CPU.

One daphne process stores on a SeaweedFS S3 server (signatures enforced). A source archive
of 500 MB (50 MB with --quick) of incompressible content is sent by the `buildhub` command's
own client twice: as a multipart POST to the API (the body passes through daphne and
Django), and as a direct upload (a form the API signs, the archive sent to the bucket, then
the completion, which reads it back from the bucket to check it). For each: the daphne
process's resident memory before and at its peak (VmHWM, reset before each upload), its CPU
time and the wall time.
"""

import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import psutil

from buildhub_cli import api
from buildhub_cli.api import Client
from buildhub_cli.cli import send_source
from builds.choices import Tier
from builds.services import create_api_token
from tests.bench.helpers import row, started_web, wait_until
from tests.publishing.ota_helpers import make_app
from tests.support import s3
from tests.support.accounts import make_account

MB = 1024 * 1024


def write_archive(path: Path, size: int) -> int:
    """A .tar.gz of about ``size`` bytes that gzip cannot shrink (random content, stored)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        member = tarfile.TarInfo("app/assets/blob.bin")
        member.size = size
        with tempfile.TemporaryFile() as content:
            left = size
            while left:
                chunk = os.urandom(min(left, 4 * MB))
                content.write(chunk)
                left -= len(chunk)
            content.seek(0)
            archive.addfile(member, content)
    return path.stat().st_size


def reset_peak(process: psutil.Process) -> None:
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # VmHWM := current RSS


def peak_rss(process: psutil.Process) -> int:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def measured(process: psutil.Process, upload) -> dict:
    before = process.memory_info().rss
    reset_peak(process)
    cpu = sum(process.cpu_times()[:2])
    started = time.perf_counter()
    upload()
    return {
        "seconds": time.perf_counter() - started,
        "rss_before": before,
        "peak": peak_rss(process),
        "cpu": sum(process.cpu_times()[:2]) - cpu,
    }


def run(ctx) -> list[dict]:
    size = (50 if ctx.quick else 500) * MB
    account = make_account(Tier.ENTERPRISE, "Upload Bench")
    make_app(account, "shop")
    secret = create_api_token(account, name="bench", scopes=["builds:write"]).secret
    directory = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    server = s3.SeaweedS3(directory / "s3")
    results = {}
    try:
        server.start()
        archive_path = directory / "shop.tar.gz"
        archived = write_archive(archive_path, size)
        ctx.log(f"upload: archive of {archived / MB:.0f} MB")
        env = {
            "AWS_STORAGE_BUCKET_NAME": server.public_bucket,
            "AWS_PRIVATE_STORAGE_BUCKET_NAME": server.private_bucket,
            "AWS_S3_ENDPOINT_URL": server.endpoint_url,
            "AWS_S3_REGION_NAME": s3.REGION,
            "AWS_ACCESS_KEY_ID": s3.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": s3.SECRET_KEY,
        }
        uploads = {
            "direct": lambda client, handle: send_source(
                client, "shop", "shop.tar.gz", handle, archived
            ),
            "multipart": lambda client, handle: client.upload(
                "/api/v1/apps/shop/sources/", "shop.tar.gz", handle, archived
            ),
        }
        for mode, upload in uploads.items():  # each in a daphne of its own, fresh
            with started_web(ctx, f"upload-{mode}", 1, env=env) as (port, servers):
                url = f"http://127.0.0.1:{port}"
                wait_until(lambda u=url: _answers(u), seconds=60, what="daphne to answer")
                client = Client(url, secret)
                # daphne answers a 500 MB multipart POST only after it has taken the whole
                # body (minutes on a busy machine): the command's 60 s would give up first.
                api.TIMEOUT = 1200
                with open(archive_path, "rb") as handle:
                    results[mode] = measured(
                        psutil.Process(servers[0].pid), lambda u=upload, c=client, h=handle: u(c, h)
                    )
    finally:
        server.stop(graceful=False)
        shutil.rmtree(directory, ignore_errors=True)
    load = f"load {os.getloadavg()[0]:.1f}"
    rows = []
    for mode, label in (("direct", "direct to the bucket"), ("multipart", "multipart POST")):
        figures = results[mode]
        ctx.log(f"upload {mode}: {figures}")
        rows += [
            row(
                f"{archived / MB:.0f} MB source upload, {label}: daphne peak RSS",
                figures["peak"] / MB,
                "MB",
                load if mode == "direct" else None,
            ),
            row(f"  daphne RSS before it ({mode})", figures["rss_before"] / MB, "MB"),
            row(f"  daphne CPU ({mode})", figures["cpu"], "s"),
            row(f"  wall time ({mode})", figures["seconds"], "s"),
        ]
    return rows


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
            return answer.status in (200, 503)
    except OSError as error:
        return getattr(error, "code", None) in (200, 503)
