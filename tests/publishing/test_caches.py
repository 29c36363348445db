"""Per-account build caches: their folders, the lock a build holds, the supervisor's sweep."""

import os
import time
from pathlib import Path

import pytest

from publishing import caches
from tests.support.accounts import make_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def cache_roots(settings, tmp_path):
    settings.OTA_NPM_CACHE_DIR = tmp_path / "npm"
    settings.OTA_METRO_CACHE_DIR = tmp_path / "metro"
    settings.BUILD_CACHE_MAX_MB_PER_ACCOUNT = 1
    settings.BUILD_CACHE_MAX_MB = 2
    return tmp_path


def fill(folder: Path, kilobytes: int, last_used: float) -> None:
    (folder / "data").write_bytes(os.urandom(kilobytes * 1024))
    os.utime(folder, (last_used, last_used))


def test_each_account_has_its_own_npm_and_metro_folders(cache_roots):
    first, second = make_account("pro", "First Co"), make_account("pro", "Second Co")

    with (
        caches.account_caches(first) as (npm_first, metro_first),
        caches.account_caches(second) as (npm_second, metro_second),
    ):
        pass

    assert npm_first.parent == cache_roots / "npm" and metro_first.parent == cache_roots / "metro"
    assert npm_first != npm_second and metro_first != metro_second
    assert npm_first.name == metro_first.name == caches.account_key(first)
    assert caches.account_key(first).startswith(f"account-{first.pk}-")


def test_the_sweep_evicts_the_least_recently_used_and_oversized_but_not_one_in_use(cache_roots):
    old, recent, huge, busy = (make_account("pro", f"{name} Co") for name in "ABCD")
    now = time.time()
    folders = {}
    for account, kilobytes, age in ((old, 800, 3000), (recent, 800, 10), (huge, 1500, 5)):
        with caches.account_caches(account) as (_, metro):
            folders[account.pk] = metro
        fill(metro, kilobytes, now - age)

    with caches.account_caches(busy) as (_, busy_metro):
        fill(busy_metro, 900, now - 9000)  # the oldest, but a build holds it
        evicted = caches.sweep_build_caches()
        assert busy_metro.exists()

    assert evicted == 2
    assert not folders[huge.pk].exists()  # over its own cap (1 MB)
    assert not folders[old.pk].exists()  # least recently used free one, total over 2 MB
    assert folders[recent.pk].exists()
