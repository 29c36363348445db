"""User-count shapes of the spike and breakpoint profiles (mixed into a LoadTestShape by the
locustfile, so Locust sees only the chosen one). Sizes come from the driver's environment."""

import os

from tests.load.thresholds import OVERALL_ERROR_RATE, OVERALL_P95_MS


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


class SpikeShape:
    """0 → peak → 0: a calm base, a sudden surge held for a while, then back down to nothing."""

    def tick(self):
        peak, base = _env_int("LOAD_USERS", 300), max(1, _env_int("LOAD_USERS", 300) // 20)
        total = _env_int("LOAD_SECONDS", 120)
        elapsed = self.get_run_time()
        phases = [  # (until, users, spawn rate)
            (total * 0.2, base, base),
            (total * 0.7, peak, peak),  # the whole peak arrives within one second
            (total * 0.9, base, peak),
            (total, 0, peak),
        ]
        for until, users, rate in phases:
            if elapsed < until:
                return users, rate
        return None


class BreakpointShape:
    """Adds users step by step until the latency or error bar breaks (or LOAD_USERS is reached).

    After each step it looks at that step alone: p95 of the last seconds over the product's
    overall bar, or any failure share over the product's error bar, ends the run; the driver
    then reads where from the per-second history.
    """

    step_seconds = 15

    def tick(self):
        step_users, max_users = _env_int("LOAD_STEP_USERS", 10), _env_int("LOAD_USERS", 500)
        elapsed = self.get_run_time()
        step = int(elapsed // self.step_seconds)
        if step != getattr(self, "_step", 0):
            self._step = step
            if self._broken():
                return None
        users = step_users * (step + 1)
        if users > max_users or elapsed > _env_int("LOAD_SECONDS", 600):
            return None
        return users, step_users

    def _broken(self) -> bool:
        total = self.runner.stats.total
        requests, failures = total.num_requests, total.num_failures
        before = getattr(self, "_counts", (0, 0))
        self._counts = (requests, failures)
        step_requests = requests - before[0]
        if step_requests <= 0:
            return False
        error_rate = (failures - before[1]) / step_requests
        p95 = total.get_current_response_time_percentile(0.95) or 0
        return p95 > OVERALL_P95_MS or error_rate > OVERALL_ERROR_RATE


SHAPES = {"spike": SpikeShape, "breakpoint": BreakpointShape}
