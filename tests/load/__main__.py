"""``python -m tests.load`` (``make load``): a Locust run against a local production-like stack.

``LOAD_PROFILE`` (or ``--profile``) picks the profile; ``LOAD_USERS``, ``LOAD_SECONDS`` and
``LOAD_MAX_REQUESTS`` override its bounds. Results land in ``var/load/``: Locust's CSV files
and HTML report, and ``<profile>.json`` with the summary. The exit code is 1 when a product
bar fails in the smoke, load and soak profiles (the others are run to find limits).
"""

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.load import report
from tests.load import thresholds as bars
from tests.load.stack import BASE_DIR, DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Stack


@dataclass(frozen=True)
class Profile:
    users: int
    seconds: int
    max_requests: int
    spawn_rate: float
    shape: str = ""
    enforced: bool = True  # a failed bar fails the run


PROFILES = {
    "smoke": Profile(users=10, seconds=60, max_requests=50_000, spawn_rate=10),
    "load": Profile(users=100, seconds=300, max_requests=500_000, spawn_rate=10),
    "stress": Profile(
        users=300, seconds=300, max_requests=1_000_000, spawn_rate=20, enforced=False
    ),
    "spike": Profile(
        users=300, seconds=120, max_requests=500_000, spawn_rate=300, shape="spike", enforced=False
    ),
    "breakpoint": Profile(
        users=1000,
        seconds=900,
        max_requests=2_000_000,
        spawn_rate=10,
        shape="breakpoint",
        enforced=False,
    ),
    "soak": Profile(users=50, seconds=1800, max_requests=2_000_000, spawn_rate=10),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bounded(profile: Profile) -> Profile:
    """The profile with the environment's overrides (users, seconds, request cap)."""

    def pick(name, default):
        value = os.environ.get(name)
        return int(value) if value else default

    return Profile(
        users=pick("LOAD_USERS", profile.users),
        seconds=pick("LOAD_SECONDS", profile.seconds),
        max_requests=pick("LOAD_MAX_REQUESTS", profile.max_requests),
        spawn_rate=profile.spawn_rate,
        shape=profile.shape,
        enforced=profile.enforced,
    )


def machine() -> dict:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": platform.platform(),
        "loadavg": [round(value, 2) for value in os.getloadavg()],
    }


def run_locust(profile: Profile, name: str, host: str, seed_file: Path, out: Path) -> int:
    prefix = out / name
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(Path(__file__).with_name("locustfile.py")),
        "--headless",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--html",
        str(out / f"{name}.html"),
        "--exit-code-on-error",
        "0",  # the bars decide, below
        "--stop-timeout",
        "10",
    ]
    if not profile.shape:
        command += [
            "-u",
            str(profile.users),
            "-r",
            str(profile.spawn_rate),
            "-t",
            f"{profile.seconds}s",
        ]
    env = {
        **os.environ,
        "LOAD_SEED": str(seed_file),
        "LOAD_SHAPE": profile.shape,
        "LOAD_USERS": str(profile.users),
        "LOAD_SECONDS": str(profile.seconds),
        "LOAD_MAX_REQUESTS": str(profile.max_requests),
        "PYTHONPATH": str(BASE_DIR),
    }
    return subprocess.call(command, env=env, cwd=BASE_DIR)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.load", description=__doc__)
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default=os.environ.get("LOAD_PROFILE") or "smoke"
    )
    parser.add_argument("--output", type=Path, default=BASE_DIR / "var" / "load")
    args = parser.parse_args(argv)
    profile = bounded(PROFILES[args.profile])
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = machine()
    stack = Stack(
        database_url=os.environ.get("LOAD_DATABASE_URL") or DEFAULT_DATABASE_URL,
        redis_url=os.environ.get("LOAD_REDIS_URL")
        or os.environ.get("REDIS_URL")
        or DEFAULT_REDIS_URL,
        var_dir=out / "stack",
        web_processes=os.cpu_count() or 1,
    )
    log(f"profile {args.profile}: {asdict(profile)}")
    seed = stack.prepare(log)
    seed_file = out / "stack" / "seed.json"
    seed_file.write_text(json.dumps(seed))
    try:
        stack.start(log)
        stack.warm_up(seed, log)
        code = run_locust(profile, args.profile, stack.url, seed_file, out)
    finally:
        stack.stop()
        log("stack stopped")
    if code != 0:
        log(f"locust exited with {code}")
        return code
    return summarize(args.profile, profile, out, started)


def summarize(name: str, profile: Profile, out: Path, started: dict) -> int:
    rows = report.endpoint_rows(out / f"{name}_stats.csv")
    seconds = report.history(out / f"{name}_stats_history.csv")
    own_goal = report.goal(rows, max((s["users"] for s in seconds), default=profile.users))
    verdicts = [v for row in rows for v in report.judge(row)]
    passed = all(v["ok"] for v in verdicts)
    summary = {
        "profile": name,
        "bounds": asdict(profile),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**started, "loadavg_after": [round(v, 2) for v in os.getloadavg()]},
        "web_processes": os.cpu_count(),
        "endpoints": [{**row, "bars": report.judge(row)} for row in rows],
        "goal": own_goal,
        "passed": passed,
    }
    print(
        f"\nLoad profile {name}: {profile.users} users max, {profile.seconds}s max, "
        f"{os.cpu_count()} cores (load average before {started['loadavg']})\n"
    )
    print(report.render(rows, bars.OVERALL_ERROR_RATE, own_goal))
    if name == "breakpoint":
        summary["breakpoint"] = report.breakpoint_of(seconds)
        print(f"\nbreakpoint: {summary['breakpoint']}")
    if name == "soak":
        summary["p99_drift"] = report.p99_drift(seconds)
        print(f"\np99 drift: {summary['p99_drift']}")
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"\n{'PASS' if passed else 'FAIL'}: results in {out}/{name}*.csv, {name}.html, {name}.json"
    )
    return 0 if passed or not profile.enforced else 1


if __name__ == "__main__":
    sys.exit(main())
