"""Build caches, one set per account: npm's package cache and Metro's transform cache.

A cache that one tenant's build writes is read by no other tenant's build: a transform
result planted by one account could otherwise ship in another account's bundle. Each
account's folders sit below ``OTA_NPM_CACHE_DIR`` and ``OTA_METRO_CACHE_DIR``, named by the
account's id and creation time (so a recreated database never hands an old account's cache
to a new one), and are mounted only into that account's sandboxes. The supervisor keeps
them within ``BUILD_CACHE_MAX_MB_PER_ACCOUNT`` each and ``BUILD_CACHE_MAX_MB`` in all,
evicting the least recently used; a build holds a shared lock on its caches, so none is
evicted while in use.
"""

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from builds.engine.sandbox import remove_tree
from builds.tiers import MB

logger = logging.getLogger("buildhub.caches")
LOCK_SUFFIX = ".lock"


def account_key(account) -> str:
    return f"account-{account.pk}-{int(account.created_at.timestamp())}"


def roots() -> list[Path]:
    return [Path(settings.OTA_NPM_CACHE_DIR), Path(settings.OTA_METRO_CACHE_DIR)]


@contextlib.contextmanager
def account_caches(account):
    """``(npm, metro)``: the account's cache folders, locked against eviction while used."""
    key = account_key(account)
    folders, locks = [], []
    try:
        for root in roots():
            folder = root / key
            folder.mkdir(parents=True, exist_ok=True)
            lock = open(root / f"{key}{LOCK_SUFFIX}", "a")  # noqa: SIM115 - held while building
            fcntl.flock(lock, fcntl.LOCK_SH)
            locks.append(lock)
            os.utime(folder)  # last used: what the sweep evicts by
            folders.append(folder)
        yield tuple(folders)
    finally:
        for lock in locks:
            lock.close()


@dataclass
class CacheFolder:
    path: Path
    size: int
    last_used: float


def folder_size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _evict(folder: CacheFolder) -> bool:
    """Delete an account's cache folder unless a build holds it."""
    lock_path = folder.path.parent / f"{folder.path.name}{LOCK_SUFFIX}"
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        remove_tree(folder.path)
    lock_path.unlink(missing_ok=True)
    return True


def sweep_build_caches() -> int:
    """Evict account caches over their own cap, then the least recently used over the total."""
    folders = []
    for root in roots():
        if not root.is_dir():
            continue
        for path in root.iterdir():
            if path.is_dir() and path.name.startswith("account-"):
                folders.append(CacheFolder(path, folder_size(path), path.stat().st_mtime))
    evicted = 0
    kept = []
    for folder in folders:
        if folder.size > settings.BUILD_CACHE_MAX_MB_PER_ACCOUNT * MB and _evict(folder):
            evicted += 1
        else:
            kept.append(folder)
    total = sum(folder.size for folder in kept)
    for folder in sorted(kept, key=lambda folder: folder.last_used):
        if total <= settings.BUILD_CACHE_MAX_MB * MB:
            break
        if _evict(folder):
            total -= folder.size
            evicted += 1
    if evicted:
        logger.info("build caches: evicted %d account cache folder(s)", evicted)
    return evicted
