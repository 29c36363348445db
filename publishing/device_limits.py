"""Rate limits of the device endpoints (BuildHub's update check and device registration,
Expo Updates, CodePush): one budget per app and one per client address, on fixed windows
shared by every web process through Redis.

The update check is the hottest path of the service (a warm one costs about 0.25 ms of CPU
and may be answered in the ASGI edge's event loop), so ``wait_for`` does no I/O: it counts
in this process, under a lock, and a background thread reconciles with the other processes
about once a second (``INCRBY`` + ``EXPIRE`` of this process's new requests per window and
key in one pipeline, reading back the fleet's count). Between two flushes a process knows
its own requests and the fleet's count as of the last flush, so the fleet as a whole can
pass a limit by what the other processes serve in about a second; a real fleet is far below
the limits anyway (see DEVICE_RATE_PER_APP in settings).

When Redis is unreachable the limits fail open: requests are answered, a warning is logged
once, and each process refuses only what its own counts already put over a limit (a lower
bound of the fleet's count, so never a request the shared count would have allowed).
"""

import hashlib
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings

from buildhub.errors import ServiceError
from buildhub.metrics import RATE_LIMITED

logger = logging.getLogger("buildhub.device_limits")

FLUSH_SECONDS = 1.0  # how often local counts are reconciled through Redis
MAX_KEYS = 50_000  # tracked apps, and tracked addresses, per process (~10 MB each at most)
MAX_KEY_LENGTH = 64  # longer app keys (never a real one) are counted by their digest
KEY_PREFIX = "buildhub:device-limit:"
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")


def parse_rate(rate: str) -> tuple[int, int]:
    """``"600000/m"`` → (600000, 60); the django-ratelimit syntax the other limits use."""
    match = _RATE.match(rate or "")
    if match is None:
        raise ValueError(f"A rate is count/period, e.g. 600/m or 120/5m, not {rate!r}")
    count, multiplier, unit = match.groups()
    return int(count), int(multiplier or 1) * _PERIODS[unit]


@dataclass(slots=True)
class _Count:
    window: int  # which fixed window (epoch seconds // period) the numbers are for
    pending: int = 0  # this process's requests not yet added in Redis
    shared: int = 0  # the fleet's count at the last flush (this process's flushed ones too)
    touched: bool = True  # requested since the last flush


class _Kind:
    """One limit (per app, or per address): its rate and what this process counts."""

    def __init__(self, name: str, rate: str):
        self.name = name
        self.rate = rate
        self.limit, self.period = parse_rate(rate)
        self.counts: dict[str, _Count] = {}


class Limiter:
    """The counts of one process. ``background=False`` (tests) leaves flushing to the caller."""

    def __init__(self, redis_url: str | None = None, *, background: bool = True):
        self._redis_url = redis_url or settings.REDIS_URL
        self._background = background
        self._lock = threading.Lock()
        self._kinds: dict[str, _Kind] = {}
        self._leftovers: list[tuple[_Kind, str, int, int]] = []  # windows that are over
        self._client: redis.Redis | None = None
        self._redis_down = False
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def _kind(self, name: str, rate: str) -> _Kind:
        kind = self._kinds.get(name)
        if kind is None or kind.rate != rate:  # first use, or the setting changed (tests)
            kind = self._kinds[name] = _Kind(name, rate)
        return kind

    def wait_for(self, app_key: str, ip: str | None) -> int | None:
        now = time.time()
        if len(app_key) > MAX_KEY_LENGTH:
            app_key = hashlib.sha256(app_key.encode()).hexdigest()
        with self._lock:
            if self._background and self._thread is None:
                self._start()
            checks = []
            if app_key:
                checks.append((self._kind("app", settings.DEVICE_RATE_PER_APP), app_key))
            if ip:
                checks.append((self._kind("ip", settings.DEVICE_RATE_PER_IP), ip))
            counts = []
            for kind, key in checks:
                window = int(now // kind.period)
                count = kind.counts.get(key)
                if count is None or count.window != window:
                    if count is None and len(kind.counts) >= MAX_KEYS:
                        continue  # a flood of distinct keys: uncounted until the next prune
                    if count is not None and count.pending:  # the last window's, to send
                        self._leftovers.append((kind, key, count.window, count.pending))
                    count = kind.counts[key] = _Count(window)
                count.touched = True
                if count.shared + count.pending >= kind.limit:
                    return max(1, math.ceil((window + 1) * kind.period - now))
                counts.append(count)
            for count in counts:  # counted only once every limit let the request through
                count.pending += 1
        return None

    # --- reconciliation -------------------------------------------------------------------
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="device-limits-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:  # the thread must outlive any one bad flush
                logger.exception("device limits: flush failed")

    def stop(self) -> None:
        self._stopped.set()

    def flush(self) -> None:
        """Add this process's new requests to the fleet's counts and read those back; drop
        what nobody asked for since the last flush. Never raises for Redis."""
        now = time.time()
        with self._lock:
            batch, self._leftovers = self._leftovers, []  # (kind, key, window, pending)
            for kind in self._kinds.values():
                current = int(now // kind.period)
                for key, count in list(kind.counts.items()):
                    if count.pending:
                        batch.append((kind, key, count.window, count.pending))
                        count.pending = 0
                        count.shared += batch[-1][3]
                    elif count.window != current or not (
                        count.touched or count.shared >= kind.limit
                    ):
                        del kind.counts[key]  # idle, or a window that is over
                    count.touched = False
        if not batch:
            return
        totals = self._send(batch)
        if totals is None:
            return
        with self._lock:
            for (kind, key, window, _), total in zip(batch, totals, strict=True):
                known = kind.counts.get(key)
                if known is not None and known.window == window:
                    known.shared = max(known.shared, int(total))

    def _send(self, batch) -> list[int] | None:
        try:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self._redis_url, socket_timeout=1, socket_connect_timeout=1
                )
            pipe = self._client.pipeline(transaction=False)
            for kind, key, window, pending in batch:
                name = f"{KEY_PREFIX}{kind.name}:{window}:{key}"
                pipe.incrby(name, pending)
                pipe.expire(name, kind.period + 60)
            replies = pipe.execute()
        except redis.RedisError as error:
            if not self._redis_down:
                logger.warning(
                    "device limits: Redis unreachable (%s); requests are allowed, each "
                    "process limiting by its own counts until it is back",
                    error,
                )
            self._redis_down = True
            return None
        if self._redis_down:
            logger.info("device limits: Redis reachable again; limits shared again")
            self._redis_down = False
        return replies[0::2]

    def clear_shared(self) -> None:
        """Delete every shared count (tests only)."""
        client = redis.Redis.from_url(self._redis_url, socket_timeout=1, socket_connect_timeout=1)
        with client:
            names = list(client.scan_iter(f"{KEY_PREFIX}*", count=1000))
            if names:
                client.delete(*names)


_limiter: Limiter | None = None
_limiter_lock = threading.Lock()


def _current() -> Limiter:
    global _limiter
    limiter = _limiter
    if limiter is None:
        with _limiter_lock:
            if _limiter is None:
                _limiter = Limiter()
            limiter = _limiter
    return limiter


def wait_for(app_key: str, ip: str | None) -> int | None:
    """None when a device request for this app (its key as the device names it; ``""``:
    none) from this address (None: unknown) may go on, else the whole seconds until it may
    come back. No I/O: cheap enough for the event loop of the ASGI edge."""
    return _current().wait_for(app_key, ip)


def flush() -> None:
    """Reconcile this process's counts through Redis now (the flush thread does it every
    second)."""
    _current().flush()


def reset(redis_url: str | None = None, *, clear_shared: bool = True) -> Limiter:
    """Start afresh (tests): forget this process's counts, stop its flush thread and, unless
    told not to, delete the shared counts. The next limiter uses ``redis_url`` if given."""
    global _limiter
    with _limiter_lock:
        if _limiter is not None:
            _limiter.stop()
        _limiter = Limiter(redis_url)
    if clear_shared:
        Limiter(redis_url).clear_shared()
    return _limiter


def _forget_after_fork() -> None:
    """A forked child has its parent's counts but not its thread: start with nothing."""
    global _limiter
    _limiter = None


os.register_at_fork(after_in_child=_forget_after_fork)


def refusal(wait: int) -> ServiceError:
    """The 429 of a refused device request, in the API's error shape with Retry-After."""
    RATE_LIMITED.labels("device").inc()
    return ServiceError(
        f"Too many requests for this app or from this address; try again in {wait} s.",
        code="rate_limited",
        status=429,
        headers={"Retry-After": str(wait)},
    )
