"""The engine's modules import each other without a cycle, counting the imports written
inside functions too (a deferred import only hides a cycle, it does not break it)."""

import ast
from pathlib import Path

import builds.engine

ENGINE = Path(builds.engine.__file__).parent
PACKAGE = "builds.engine"


def engine_imports(source: str) -> set[str]:
    """The engine modules (short names) that ``source`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from builds.engine import x`` imports the module x; ``from builds.engine.x
            # import y`` imports x whatever y is.
            if node.module == PACKAGE:
                names = [f"{PACKAGE}.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            if name.startswith(PACKAGE + "."):
                found.add(name[len(PACKAGE) + 1 :].split(".")[0])
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in ENGINE.glob("*.py") if path.stem != "__init__"}
    return {
        name: engine_imports(path.read_text()) & modules.keys() for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the path that closes it, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for imported in sorted(graph.get(name, ())):
            cycle = visit(imported, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_the_engine_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    assert {"runner", "lifecycle", "tickets", "workers", "exceptions"} <= graph.keys()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_a_deferred_import_that_closes_a_cycle_is_found():
    source = "def notify():\n    from builds.engine.tickets import issue_ticket\n"
    assert engine_imports(source) == {"tickets"}
    graph = import_graph()
    graph["tickets"] = graph["tickets"] | engine_imports("from builds.engine import lifecycle")
    assert find_cycle(graph) is not None  # tickets -> lifecycle -> tickets


def test_the_exceptions_executors_raise_need_no_other_engine_module():
    assert import_graph()["exceptions"] == set()


def test_builds_imports_nothing_of_the_apps_built_on_it():
    """``publishing``, ``abuse`` and ``buildevents`` import ``builds``, never the other way:
    where ``builds`` must reach them, they register in ``builds.registry``."""
    outward = ("publishing", "abuse", "buildevents")
    offenders = []
    for path in sorted(ENGINE.parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.relative_to(ENGINE.parent.parent)}: {name}"
                for name in names
                if name.split(".")[0] in outward
            ]
    assert offenders == []
