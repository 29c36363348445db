"""Job workspaces: a fresh folder per attempt under a root of this installation, and the
sweep that removes the ones a killed worker left behind."""

import functools
import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import connections

from builds.choices import JobStatus
from builds.engine import sandbox
from builds.models import Job

WORKSPACE_PREFIX = "buildhub-job-"
SANDBOX_DIR = ".sandbox"  # under the workspace root: the /etc files of sandbox users


def installation_key() -> str:
    """Names this installation by its database: jobs of one database share a workspace root."""
    db = connections["default"].settings_dict
    return _key_of(f"{db['ENGINE']}:{db.get('HOST', '')}:{db.get('PORT', '')}:{db['NAME']}")


@functools.lru_cache(maxsize=8)
def _key_of(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def workspace_root() -> Path:
    """Where job workspaces live: ``JOB_WORKSPACE_ROOT``, else a folder of this installation
    on tmpfs (/dev/shm) or in the temporary directory. Per installation, so the sweep of one
    BuildHub never removes the workspaces of another on the same host."""
    if settings.JOB_WORKSPACE_ROOT:
        return Path(settings.JOB_WORKSPACE_ROOT)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"buildhub-{installation_key()}"


def make_workspace(job: Job) -> Path:
    root = workspace_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{job.pk}-", dir=root))


def sweep_workspaces() -> int:
    """Delete workspaces whose job is not running (left by a killed worker)."""
    root = workspace_root()
    removed = 0
    if not root.is_dir():
        return 0
    for path in root.glob(f"{WORKSPACE_PREFIX}*"):
        job_id = path.name[len(WORKSPACE_PREFIX) :][:36]
        if not Job.objects.filter(pk=job_id, status=JobStatus.RUNNING).exists():
            sandbox.remove_tree(path)
            removed += 1
    return removed
