"""The benchmark runner's own logic, on a fake package of benchmarks (nothing is measured)."""

import json
import textwrap

import pytest

from tests.bench import runner


@pytest.fixture
def fake_benchmarks(tmp_path, monkeypatch):
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bench_alpha.py").write_text(
        textwrap.dedent(
            """
            def run(ctx):
                ctx.log("alpha ran quick" if ctx.quick else "alpha ran")
                return [
                    {"name": "alpha rate", "value": 1234.5, "unit": "ops/s",
                     "target": ">= 1000", "ok": True},
                    {"name": "alpha p95", "value": 0.0123, "unit": "ms",
                     "target": None, "ok": None},
                ]
            """
        )
    )
    (package / "bench_broken.py").write_text("def run(ctx):\n    raise RuntimeError('no')\n")
    (package / "helpers.py").write_text("raise AssertionError('not a benchmark: never imported')")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fakebench"


@pytest.fixture
def ctx():
    return runner.BenchContext("postgres://u:secret@h/db", "redis://h/13", quick=True)


def test_discovers_bench_modules_only_and_filters_by_name(fake_benchmarks):
    assert runner.discover(fake_benchmarks) == ["fakebench.bench_alpha", "fakebench.bench_broken"]
    assert runner.discover(fake_benchmarks, only=["alpha"]) == ["fakebench.bench_alpha"]
    assert runner.discover(fake_benchmarks, only=["bench_broken"]) == ["fakebench.bench_broken"]
    with pytest.raises(SystemExit, match="no benchmark named gamma; there are: alpha, broken"):
        runner.discover(fake_benchmarks, only=["gamma"])


def test_the_real_benchmarks_are_discovered():
    names = runner.discover()
    assert "tests.bench.bench_engine" in names
    assert "tests.bench.bench_websocket" in names


def test_a_failing_module_becomes_a_failed_row_and_the_others_still_run(fake_benchmarks, ctx):
    rows = runner.run_modules(runner.discover(fake_benchmarks), ctx)

    assert [row["name"] for row in rows] == ["alpha rate", "alpha p95", "broken (failed)"]
    assert rows[2]["ok"] is False
    assert rows[2]["error"] == "RuntimeError: no"
    assert any("alpha ran quick" in line for line in ctx.lines)
    assert runner.exit_code(rows) == 1
    assert runner.exit_code(rows[:2]) == 0


def test_the_table_shows_name_value_unit_target_and_result(fake_benchmarks, ctx):
    rows = runner.run_modules(runner.discover(fake_benchmarks), ctx)

    lines = runner.render_table(rows).splitlines()

    assert lines[0].split() == ["benchmark", "value", "unit", "target", "result"]
    assert lines[2].split() == ["alpha", "rate", "1,234", "ops/s", ">=", "1000", "pass"]
    assert lines[3].split() == ["alpha", "p95", "0.0123", "ms", "-", "-"]
    assert lines[4].split() == ["broken", "(failed)", "0", "-", "FAIL"]


def test_results_are_written_as_json_without_passwords(fake_benchmarks, ctx, tmp_path):
    rows = runner.run_modules(runner.discover(fake_benchmarks, only=["alpha"]), ctx)
    path = tmp_path / "out" / "results.json"

    runner.write_results(path, rows, ctx)

    document = json.loads(path.read_text())
    assert document["quick"] is True
    assert document["database"] == "postgres://u:***@h/db"
    assert [r["value"] for r in document["results"]] == [1234.5, 0.0123]
    assert document["results"][0]["target"] == ">= 1000"


def test_a_row_missing_a_field_or_not_finite_is_refused():
    with pytest.raises(ValueError, match="lacks ok, target"):
        runner.check_row({"name": "x", "value": 1, "unit": "s"}, "m")
    with pytest.raises(ValueError, match="not a finite number"):
        runner.check_row(
            {"name": "x", "value": float("nan"), "unit": "s", "target": None, "ok": None}, "m"
        )
