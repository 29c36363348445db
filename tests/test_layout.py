"""Helpers shared by test modules live in tests/support/, so that a module's imports never run
another module's tests' setup (its registrations, its fixtures) and a helper has one home."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(source: str, path: Path) -> list[str]:
    """The dotted names a module imports, relative ones resolved against its package."""
    package = ["tests", *path.relative_to(TESTS).parent.parts]
    names = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)  # from x import test_y
    return names


def is_test_module_or_conftest(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and any(p == "conftest" or p.startswith("test_") for p in parts)


def test_no_module_under_tests_imports_a_test_module_or_a_conftest():
    offenders = [
        f"{path.relative_to(TESTS.parent)} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for name in imported_modules(path.read_text(), path)
        if is_test_module_or_conftest(name)
    ]
    assert offenders == [], "move the shared helper to tests/support/:\n" + "\n".join(offenders)


def test_the_check_sees_both_kinds_of_import():
    module = TESTS / "builds" / "test_example.py"
    source = (
        "from tests.builds.test_runner import run_one\n"
        "from tests.publishing import conftest\n"
        "from .test_consumers import a_token\n"
        "from tests.support.runner import run_one\n"
    )
    names = [n for n in imported_modules(source, module) if is_test_module_or_conftest(n)]
    assert names == [
        "tests.builds.test_runner",
        "tests.builds.test_runner.run_one",
        "tests.publishing.conftest",
        "tests.builds.test_consumers",
        "tests.builds.test_consumers.a_token",
    ]
