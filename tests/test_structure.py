"""The package's shape: imports point one way, private names stay home, functions stay short."""

import ast
import importlib.util
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_distill"
MAX_FUNCTION_LINES = 60  # docstrings not counted


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def imports(tree):
    """(module imported, names taken from it) for every keras_distill import, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_distill"):
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_distill"):
                    yield alias.name, []


def dependencies(name: str) -> set:
    found = set()
    for module, names in imports(TREES[name]):
        for imported in names or [None]:
            full = f"{module}.{imported}" if imported else module
            found.add(full if full in MODULES else module)
    # a package's __init__ importing its own modules is not a dependency of theirs
    return {d for d in found if d in MODULES and d != name and not name.startswith(d + ".")}


def cycles() -> list:
    graph = {name: dependencies(name) for name in MODULES if not name.endswith("__init__")}
    graph = {name: deps - {"keras_distill"} for name, deps in graph.items()}
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_circle():
    assert cycles() == []


def test_the_checker_finds_a_circle(monkeypatch):
    # so that test_no_import_circle cannot pass by finding nothing at all
    fake = {
        "keras_distill.a": ast.parse("from keras_distill import b"),
        "keras_distill.b": ast.parse("from keras_distill.a import f"),
    }
    monkeypatch.setattr(sys.modules[__name__], "TREES", {**TREES, **fake})
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {**MODULES, **dict.fromkeys(fake)})
    assert ["keras_distill.a", "keras_distill.b", "keras_distill.a"] in cycles()


def test_no_private_name_is_imported_across_modules():
    private = [
        f"{name}: {imported} from {module}"
        for name, tree in TREES.items()
        for module, names in imports(tree)
        for imported in names
        if imported.startswith("_") and not imported.startswith("__")
    ]
    assert private == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_functions_are_short(name):
    long = []
    for node in ast.walk(TREES[name]):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                lines -= first.end_lineno - first.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{node.name} ({lines} lines)")
    assert long == []


def test_micro_depends_only_on_its_own_modules_and_the_core():
    core = {
        "keras_distill.utils.model_inspection",
        "keras_distill.utils.inputs",
        "keras_distill.utils.markdown",
    }
    outside = {
        f"{name} -> {dep}"
        for name in MODULES
        if name.startswith("keras_distill.micro")
        for dep in dependencies(name)
        if not dep.startswith("keras_distill.micro") and dep not in core
    }
    assert outside == set()


BENCHMARKS = sorted((PACKAGE.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_every_benchmark_script_imports_and_has_a_main(path, monkeypatch):
    # A benchmark that no longer imports (a helper moved away) fails here, not months later.
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (path.stem == "common") or callable(getattr(module, "main", None))
