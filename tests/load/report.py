"""The summary of a load run from Locust's CSV files: one row per endpoint with pass/fail
against the product's bars, our own goal beside them, the breakpoint and the p99 drift."""

import csv
from pathlib import Path

from tests.load import thresholds as bars

OVERALL = "Aggregated"


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def endpoint_rows(stats_csv: Path) -> list[dict]:
    rows = []
    with stats_csv.open() as handle:
        for line in csv.DictReader(handle):
            requests, failures = int(line["Request Count"]), int(line["Failure Count"])
            rows.append(
                {
                    "endpoint": "overall" if line["Name"] == OVERALL else line["Name"],
                    "requests": requests,
                    "failures": failures,
                    "error_rate": failures / requests if requests else 0.0,
                    "p50_ms": _number(line["50%"]),
                    "p95_ms": _number(line["95%"]),
                    "p99_ms": _number(line["99%"]),
                    "rps": round(_number(line["Requests/s"]), 2),
                }
            )
    return rows


def judge(row: dict, error_rate_bar: float = bars.OVERALL_ERROR_RATE) -> list[dict]:
    """The product's bars that apply to a row, each with its verdict."""
    checks = []
    if row["endpoint"] == "overall":
        checks.append(("p95", row["p95_ms"], bars.OVERALL_P95_MS))
        checks.append(("p99", row["p99_ms"], bars.OVERALL_P99_MS))
    elif row["endpoint"] in bars.ENDPOINT_P95_MS:
        checks.append(("p95", row["p95_ms"], bars.ENDPOINT_P95_MS[row["endpoint"]]))
    results = [
        {"what": f"{name} < {bar} ms", "value": value, "ok": value < bar}
        for name, value, bar in checks
    ]
    if row["endpoint"] == "overall":
        results.append(
            {
                "what": f"errors < {error_rate_bar:.2%}",
                "value": row["error_rate"],
                "ok": row["error_rate"] < error_rate_bar,
            }
        )
    return results


def goal(rows: list[dict], users: int) -> dict:
    """Our own goal: update check p95 ≤ 20 ms at 100 users on 2 cores (judged only there)."""
    check = next((row for row in rows if row["endpoint"] == "update check"), None)
    p95 = check["p95_ms"] if check else None
    judged = users >= bars.GOAL_USERS and p95 is not None
    return {
        "what": f"update check p95 <= {bars.GOAL_UPDATE_CHECK_P95_MS} ms "
        f"at {bars.GOAL_USERS} users",
        "value": p95,
        "users": users,
        "ok": (p95 <= bars.GOAL_UPDATE_CHECK_P95_MS) if judged else None,
    }


def history(history_csv: Path) -> list[dict]:
    """The overall row of each second: users, requests/s, current-window percentiles."""
    seconds = []
    with history_csv.open() as handle:
        for line in csv.DictReader(handle):
            if line["Name"] != OVERALL:
                continue
            seconds.append(
                {
                    "t": int(line["Timestamp"]),
                    "users": int(line["User Count"]),
                    "rps": _number(line["Requests/s"]),
                    "failures_per_s": _number(line["Failures/s"]),
                    "p95_ms": _number(line["95%"]),
                    "p99_ms": _number(line["99%"]),
                    "requests": int(_number(line["Total Request Count"])),
                    "failures": int(_number(line["Total Failure Count"])),
                }
            )
    return seconds


def steps(seconds: list[dict]) -> list[dict]:
    """One row per user count the run held: its last second (whose current-window
    percentiles cover that step) and the failures that happened during it."""
    rows, failures_before = [], 0
    for index, second in enumerate(seconds):
        last_of_step = index + 1 == len(seconds) or seconds[index + 1]["users"] != second["users"]
        if not last_of_step or second["users"] == 0 or second["requests"] == 0:
            continue
        rows.append({**second, "step_failures": second["failures"] - failures_before})
        failures_before = second["failures"]
    return rows


def breakpoint_of(seconds: list[dict]) -> dict:
    """The first user step over a bar (p95 over the overall bar, or any failure) and the
    last step that held, with its throughput."""
    held = None
    for step in steps(seconds):
        if step["p95_ms"] > bars.OVERALL_P95_MS or step["step_failures"] > 0:
            reason = (
                f"p95 {step['p95_ms']:.0f} ms > {bars.OVERALL_P95_MS} ms"
                if step["p95_ms"] > bars.OVERALL_P95_MS
                else f"{step['step_failures']} failed requests"
            )
            return {
                "broke": True,
                "reason": reason,
                "users": step["users"],
                "rps": step["rps"],
                "held_users": held["users"] if held else 0,
                "held_rps": held["rps"] if held else 0.0,
            }
        held = step
    return {
        "broke": False,
        "reason": "no bar broke up to the profile's user limit",
        "users": held["users"] if held else 0,
        "held_users": held["users"] if held else 0,
        "held_rps": held["rps"] if held else 0.0,
    }


def p99_drift(seconds: list[dict]) -> dict:
    """p99 of the first tenth of the run against the last tenth (median of each window)."""
    steady = [second for second in seconds if second["requests"] and second["users"]]
    if len(steady) < 20:
        return {"first_p99_ms": None, "last_p99_ms": None, "drift_ms": None, "drift_pct": None}
    window = max(1, len(steady) // 10)

    def median_p99(part):
        values = sorted(second["p99_ms"] for second in part)
        return values[len(values) // 2]

    first, last = median_p99(steady[window : 2 * window]), median_p99(steady[-window:])
    return {
        "first_p99_ms": first,
        "last_p99_ms": last,
        "drift_ms": last - first,
        "drift_pct": round((last - first) / first * 100, 1) if first else None,
    }


def render(rows: list[dict], error_rate_bar: float, own_goal: dict) -> str:
    header = ["endpoint", "requests", "p50 ms", "p95 ms", "p99 ms", "errors", "req/s", "bars"]
    lines = []
    for row in sorted(rows, key=lambda row: row["endpoint"] == "overall"):
        verdicts = judge(row, error_rate_bar)
        bars_text = (
            ", ".join(f"{v['what']} {'PASS' if v['ok'] else 'FAIL'}" for v in verdicts) or "-"
        )
        if row["endpoint"] == "update check" and own_goal["value"] is not None:
            state = {True: "PASS", False: "MISS", None: f"n/a at {own_goal['users']} users"}
            bars_text += f"; goal p95 <= {bars.GOAL_UPDATE_CHECK_P95_MS} ms: "
            bars_text += state[own_goal["ok"]]
        lines.append(
            [
                row["endpoint"],
                str(row["requests"]),
                f"{row['p50_ms']:.0f}",
                f"{row['p95_ms']:.0f}",
                f"{row['p99_ms']:.0f}",
                f"{row['error_rate']:.3%}",
                f"{row['rps']:.1f}",
                bars_text,
            ]
        )
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    rule = "  ".join("-" * width for width in widths)

    def fmt(cells):
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])
