"""The package's shape: subpackages import one way, private names stay home, code stays short."""

import ast
import importlib.util
import pathlib
import re
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_distill"
MAX_FUNCTION_LINES = 50  # as formatted by ruff, docstrings not counted
MAX_MODULE_LINES = 600  # a concept may be one module


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


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_short(name):
    assert len(MODULES[name].read_text().splitlines()) <= MAX_MODULE_LINES


# Which concepts of the implementation (`keras_distill._src.<concept>`) each concept may import
# (keras-distill's layers, bottom to top). The public modules (`keras_distill`, its public
# subpackages, `__main__`) only re-export; `version` is a leaf anyone uses.
ALLOWED = {
    "utils": set(),
    "losses": {"utils"},
    "teachers": {"utils"},
    "objective": {"losses", "utils"},
    "training": {"objective", "losses", "teachers", "utils"},
    "labelling": {"objective", "losses", "teachers", "utils"},
    "micro": {"utils"},
    "studies": {"training", "labelling", "micro", "objective", "losses", "teachers", "utils"},
    "search": {
        "studies",
        "training",
        "labelling",
        "micro",
        "objective",
        "losses",
        "teachers",
        "utils",
    },
    "demo": {"search", "studies", "training", "micro", "utils"},
    "cli": {
        "demo",
        "search",
        "studies",
        "training",
        "labelling",
        "micro",
        "objective",
        "losses",
        "teachers",
        "utils",
    },
}
INTERNAL = "keras_distill._src"


def subpackage(name: str) -> str | None:
    """The concept of an implementation module, None for the public modules."""
    if not name.startswith(INTERNAL + "."):
        return None
    return name[len(INTERNAL) + 1 :].split(".")[0]


def forbidden_dependencies(modules) -> set:
    found = set()
    for name in modules:
        own = subpackage(name)
        if own is None:
            continue
        for dep in dependencies(name):
            if dep in ("keras_distill.version", INTERNAL):
                continue
            target = subpackage(dep)
            if target is None or (target != own and target not in ALLOWED[own]):
                found.add(f"{name} -> {dep}")
    return found


def test_every_implementation_module_is_in_a_concept_of_the_table():
    concepts = {subpackage(name) for name in MODULES} - {None}
    assert concepts == set(ALLOWED)


def test_the_public_modules_only_re_export():
    # the front door holds no implementation: imports, `__all__`, docstrings and the 0.1 shim
    for name, tree in TREES.items():
        if subpackage(name) is not None or name == INTERNAL:
            continue
        defined = [
            node.name
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name != "__getattr__"
        ]
        assert defined == [], f"{name} defines {defined}: move them under {INTERNAL}"


def test_subpackages_import_only_what_the_table_allows():
    assert forbidden_dependencies(MODULES) == set()


def test_the_table_check_finds_an_arrow_back_up(monkeypatch):
    # so that the test above cannot pass by finding nothing at all
    fake = {
        "keras_distill._src.utils.fake": ast.parse(
            "from keras_distill._src.training import distiller"
        )
    }
    monkeypatch.setattr(sys.modules[__name__], "TREES", {**TREES, **fake})
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {**MODULES, **dict.fromkeys(fake)})
    found = forbidden_dependencies(["keras_distill._src.utils.fake"])
    assert found == {"keras_distill._src.utils.fake -> keras_distill._src.training.distiller"}


PRIVATE_KERAS_API = "# private Keras API:"  # the comment that explains a needed exception


def attribute_reads(tree):
    """(node, object, attribute name) of every `x.name` and `getattr(x, "name")`/`hasattr`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node, node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", "") in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            yield node, node.args[0], node.args[1].value


def private_reads(name: str) -> list:
    """`other._attribute` reads: only `self`/`cls` may touch private attributes."""
    lines = MODULES[name].read_text().splitlines()
    found = []
    for node, value, attribute in attribute_reads(TREES[name]):
        if not attribute.startswith("_"):
            continue
        own = isinstance(value, ast.Name) and value.id in ("self", "cls")
        parent = isinstance(value, ast.Call) and getattr(value.func, "id", "") == "super"
        if attribute.startswith("__") or own or parent:
            continue
        # the explaining comment stands on the line or on one of the two lines above it
        if not any(PRIVATE_KERAS_API in line for line in lines[node.lineno - 3 : node.lineno]):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_private_read_check_finds_one(monkeypatch, tmp_path):
    # so that the test below cannot pass by finding nothing at all
    fake = tmp_path / "fake.py"
    fake.write_text(
        "def f(model, self):\n    self._ok = 1\n    getattr(model, '_mask', None)\n"
        "    return model._hidden\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {**MODULES, "fake": fake})
    monkeypatch.setattr(
        sys.modules[__name__], "TREES", {**TREES, "fake": ast.parse(fake.read_text())}
    )
    assert private_reads("fake") == [
        "line 3: getattr(model, '_mask', None)",
        "line 4: model._hidden",
    ]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_attribute_of_another_object_is_read(name):
    assert private_reads(name) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_keras_import_and_no_formatter_escape(name):
    source = MODULES[name].read_text()
    assert "keras.src" not in "\n".join(
        line for line in source.splitlines() if line.lstrip().startswith(("import", "from"))
    )
    assert "fmt: skip" not in source and "fmt: off" not in source


BENCHMARKS = sorted((PACKAGE.parent / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_every_benchmark_script_imports_and_has_a_main(path, monkeypatch):
    # A benchmark that no longer imports (a helper moved away) fails here, not months later.
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (path.stem == "common") or callable(getattr(module, "main", None))


TESTS = pathlib.Path(__file__).resolve().parent
CONCEPTS = {path.name for path in (PACKAGE / "_src").iterdir() if (path / "__init__.py").exists()}
CROSS_CUTTING = {  # tests of the whole package, its files, docs and release: they stay in tests/
    "test_cli",
    "test_compatibility",
    "test_docs",
    "test_docs_site",
    "test_properties",
    "test_release",
    "test_saving",
    "test_structure",
    "test_tutorials",
}
SHARED = {"conftest", "numpy_references"}  # the builders and references tests may import


def layout_problems(root: pathlib.Path) -> list[str]:
    """Test files outside tests/<concept>/ (tests/ for cross-cutting ones); test-to-test imports."""
    problems = []
    python_files = sorted(root.rglob("*.py"))
    local = {path.stem for path in python_files} - SHARED
    for path in python_files:
        where = path.parent.relative_to(root).parts
        if path.stem in SHARED or where == ():
            placed = where == () and (path.stem in SHARED or path.stem in CROSS_CUTTING)
        else:
            placed = len(where) == 1 and where[0] in CONCEPTS and path.stem.startswith("test_")
        if not placed:
            problems.append(f"{path.relative_to(root)}: not in tests/<concept>/ nor cross-cutting")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            elif isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            else:
                continue
            problems += [f"{path.relative_to(root)} imports {n}" for n in names if n in local]
    return problems


def test_tests_mirror_the_concepts_and_import_no_other_test_file():
    assert layout_problems(TESTS) == []


def test_the_layout_check_finds_a_misplaced_file_and_a_test_imported_by_another(tmp_path):
    (tmp_path / "losses").mkdir()
    (tmp_path / "conftest.py").write_text("SCE = None\n")
    (tmp_path / "losses" / "test_kl.py").write_text("from conftest import SCE\nTEACHER = 1\n")
    (tmp_path / "losses" / "test_dkd.py").write_text("from test_kl import TEACHER\n")
    (tmp_path / "test_losses_too.py").write_text("import numpy\n")
    assert layout_problems(tmp_path) == [
        "losses/test_dkd.py imports test_kl",
        "test_losses_too.py: not in tests/<concept>/ nor cross-cutting",
    ]


def test_the_architecture_page_states_the_import_table_this_test_enforces():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \|$", page, re.M)
    stated = {
        concept: set(re.findall(r"`(\w+)`", allowed)) - {"keras_distill"}
        for concept, allowed in rows
        if concept in ALLOWED or concept == "utils"
    }
    stated["utils"] = set()  # "nothing in the package but keras_distill.version"
    assert stated == ALLOWED
    concepts = {p.name for p in (PACKAGE / "_src").iterdir() if p.is_dir() and p.name[0] != "_"}
    assert concepts | {"cli"} == set(ALLOWED)
