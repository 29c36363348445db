"""The benchmark runner behind ``make bench`` (``python -m tests.bench``).

It prepares a fresh PostgreSQL database and an empty Redis database, points this process
(and every process it starts) at them, migrates, then imports each ``tests/bench/bench_*.py``
and calls its ``run(ctx)``. A module returns result rows::

    {"name": str, "value": float, "unit": str, "target": str | None, "ok": bool | None}

The runner prints one table and writes them as JSON (``var/bench/results.json``).
"""

import datetime as dt
import importlib
import json
import math
import os
import pkgutil
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/buildhub_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
PREFIX = "bench_"


@dataclass
class BenchContext:
    database_url: str
    redis_url: str
    quick: bool = False
    lines: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.lines.append(line)
        print(line, file=sys.stderr, flush=True)


def discover(package: str = "tests.bench", only: list[str] | None = None) -> list[str]:
    """Module names ``<package>.bench_*``, sorted; ``only`` keeps those named (with or
    without the ``bench_`` prefix) and refuses a name that matches none."""
    found = sorted(
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
        if info.name.startswith(PREFIX)
    )
    if not only:
        return found
    wanted = {name.removeprefix(PREFIX) for name in only}
    unknown = wanted - {module.rsplit(".", 1)[1].removeprefix(PREFIX) for module in found}
    if unknown:
        raise SystemExit(
            f"no benchmark named {', '.join(sorted(unknown))}; there are: "
            + ", ".join(module.rsplit(".", 1)[1].removeprefix(PREFIX) for module in found)
        )
    return [m for m in found if m.rsplit(".", 1)[1].removeprefix(PREFIX) in wanted]


def check_row(row: dict, module: str) -> dict:
    missing = {"name", "value", "unit", "target", "ok"} - set(row)
    if missing:
        raise ValueError(f"{module}: a result row lacks {', '.join(sorted(missing))}: {row}")
    value = float(row["value"])
    if not math.isfinite(value):
        raise ValueError(f"{module}: {row['name']} is not a finite number")
    return {**row, "value": value, "module": module}


def run_modules(modules: list[str], ctx: BenchContext) -> list[dict]:
    """Run each module's ``run(ctx)``; a module that fails gives one failed row, not a crash."""
    rows = []
    for module in modules:
        short = module.rsplit(".", 1)[1].removeprefix(PREFIX)
        ctx.log(f"running {short}")
        started = time.monotonic()
        try:
            results = importlib.import_module(module).run(ctx)
            rows.extend(check_row(row, module) for row in results)
        except Exception as error:  # noqa: BLE001 - reported in the table and the exit code
            traceback.print_exc()
            rows.append(
                {
                    "name": f"{short} (failed)",
                    "value": 0.0,
                    "unit": "",
                    "target": None,
                    "ok": False,
                    "error": f"{type(error).__name__}: {error}",
                    "module": module,
                }
            )
        ctx.log(f"{short} took {time.monotonic() - started:.1f}s")
    return rows


def format_value(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def render_table(rows: list[dict]) -> str:
    verdicts = {True: "pass", False: "FAIL", None: "-"}
    body = [
        [row["name"], format_value(row["value"]), row["unit"], row["target"] or "-"]
        + [verdicts[row["ok"]]]
        for row in rows
    ]
    header = ["benchmark", "value", "unit", "target", "result"]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            str(cell).rjust(width) if i == 1 else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def write_results(path: Path, rows: list[dict], ctx: BenchContext) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": ctx.quick,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "database": redact_url(ctx.database_url),
        "redis": redact_url(ctx.redis_url),
        "results": rows,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def exit_code(rows: list[dict]) -> int:
    """1 when a benchmark failed or missed its target, else 0."""
    return 1 if any(row["ok"] is False for row in rows) else 0
