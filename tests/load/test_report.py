"""The load summary's arithmetic: verdicts, the breakpoint and the p99 drift."""

import csv

from tests.load import report


def second(t, users, p95=50.0, p99=80.0, failures_per_s=0.0, rps=10.0):
    return {
        "t": t,
        "users": users,
        "rps": rps,
        "failures_per_s": failures_per_s,
        "p95_ms": p95,
        "p99_ms": p99,
        "requests": 100 * (t + 1),
        "failures": 0,
    }


def test_overall_row_is_judged_on_p95_p99_and_errors():
    row = {"endpoint": "overall", "p95_ms": 790, "p99_ms": 1600, "error_rate": 0.0}
    verdicts = {v["what"]: v["ok"] for v in report.judge(row)}
    assert verdicts == {"p95 < 800 ms": True, "p99 < 1500 ms": False, "errors < 0.01%": True}


def test_device_endpoints_have_their_own_p95_bars():
    check = report.judge({"endpoint": "update check", "p95_ms": 500, "p99_ms": 0})
    download = report.judge({"endpoint": "bundle download", "p95_ms": 1999, "p99_ms": 0})
    assert [v["ok"] for v in check] == [False]  # the bar is strict: < 500 ms
    assert [v["ok"] for v in download] == [True]
    assert report.judge({"endpoint": "job status", "p95_ms": 9999, "p99_ms": 0}) == []


def test_own_goal_is_judged_only_at_its_user_count():
    rows = [{"endpoint": "update check", "p95_ms": 18.0}]
    assert report.goal(rows, users=10)["ok"] is None
    assert report.goal(rows, users=100)["ok"] is True
    assert report.goal([{"endpoint": "update check", "p95_ms": 21.0}], users=100)["ok"] is False


def step(t, users, p95=50.0, failures=0, rps=10.0):
    return {**second(t, users, p95=p95, rps=rps), "failures": failures}


def test_breakpoint_names_the_first_broken_step_and_the_last_that_held():
    seconds = [
        step(0, 10, p95=2000),  # a slow first second inside a step that held: not a break
        step(1, 10, rps=50),
        step(2, 20, rps=90),
        step(3, 30, p95=950, rps=95),
    ]
    found = report.breakpoint_of(seconds)
    assert found["broke"] is True
    assert found["users"] == 30
    assert (found["held_users"], found["held_rps"]) == (20, 90)
    assert found["reason"] == "p95 950 ms > 800 ms"


def test_a_failure_during_a_step_breaks_the_error_bar():
    seconds = [step(0, 10, failures=2), step(1, 10, failures=2), step(2, 20, failures=3)]
    found = report.breakpoint_of(seconds)
    assert found["users"] == 10  # its failures count against the first step
    assert found["reason"] == "2 failed requests"


def test_a_run_that_never_breaks_says_so():
    found = report.breakpoint_of([step(t, 10 * (t + 1)) for t in range(5)])
    assert found["broke"] is False
    assert found["held_users"] == 50


def test_p99_drift_compares_the_first_and_last_tenth():
    seconds = [second(t, 50, p99=100.0 if t < 50 else 160.0) for t in range(100)]
    drift = report.p99_drift(seconds)
    assert (drift["first_p99_ms"], drift["last_p99_ms"]) == (100.0, 160.0)
    assert drift["drift_ms"] == 60.0
    assert drift["drift_pct"] == 60.0


def test_endpoint_rows_read_locust_stats(tmp_path):
    path = tmp_path / "smoke_stats.csv"
    columns = ["Type", "Name", "Request Count", "Failure Count", "Requests/s", "50%", "95%", "99%"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerow(["GET", "update check", "2000", "1", "33.3", "9", "40", "120"])
        writer.writerow(["", "Aggregated", "4000", "1", "66.6", "12", "80", "300"])
    rows = report.endpoint_rows(path)
    assert rows[0]["endpoint"] == "update check"
    assert rows[0]["error_rate"] == 0.0005
    assert rows[1]["endpoint"] == "overall"
    assert (rows[1]["p50_ms"], rows[1]["p95_ms"], rows[1]["p99_ms"]) == (12.0, 80.0, 300.0)
    assert "update check" in report.render(rows, 0.0001, report.goal(rows, 10))
