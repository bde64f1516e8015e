"""The documentation site builds offline with warnings as errors and documents every public name.

`make docs` and these tests run the same Sphinx build (MyST-NB, furo; see docs/conf.py). A
broken link or reference, a docstring that does not parse, a page outside every table of
contents or a public name missing from the API reference fails here.
"""

import doctest
import importlib
import inspect
import pathlib
import pkgutil
import re
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SPHINX_WARNING = re.compile(r": (WARNING|ERROR|CRITICAL|SEVERE): ")


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """Builds the site once (fresh, into a temporary folder); returns the HTML folder."""
    out = tmp_path_factory.mktemp("docs")
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q"]
    command += ["-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    warnings = [line for line in run.stderr.splitlines() if SPHINX_WARNING.search(line)]
    assert run.returncode == 0, "the docs build failed:\n" + "\n".join(warnings or [run.stderr])
    return out / "html"


def inventory(html: pathlib.Path) -> dict[str, set[str]]:
    """The documented objects of the built site, by role (`py:class`, ...)."""
    from sphinx.util.inventory import InventoryFile

    with open(html / "objects.inv", "rb") as stream:
        loaded = InventoryFile.load(stream, "", lambda base, uri: uri)
    entries = loaded.data if hasattr(loaded, "data") else loaded
    return {role: set(names) for role, names in entries.items()}


def public_packages() -> list[types.ModuleType]:
    """`keras_distill` and its public subpackages."""
    package = importlib.import_module("keras_distill")
    names = [
        info.name
        for info in pkgutil.iter_modules(package.__path__, "keras_distill.")
        if info.ispkg and not info.name.rsplit(".", 1)[1].startswith("_")
    ]
    return [package, *(importlib.import_module(name) for name in sorted(names))]


def public_modules() -> list[str]:
    """Every public module of the package (no `_` anywhere in its path, `__main__` aside)."""
    package = importlib.import_module("keras_distill")
    names = ["keras_distill"]
    for info in pkgutil.walk_packages(package.__path__, "keras_distill."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def documented_as(value, package: types.ModuleType, name: str) -> tuple[str, str]:
    """The role and full name under which the reference documents `package.name`."""
    if isinstance(value, types.ModuleType):
        return "py:module", value.__name__
    if inspect.isclass(value):
        role = "py:exception" if issubclass(value, BaseException) else "py:class"
        return role, f"{value.__module__}.{value.__qualname__}"
    if inspect.isfunction(value):
        return "py:function", f"{value.__module__}.{value.__qualname__}"
    return "py:data", f"{package.__name__}.{name}"


@pytest.mark.slow
def test_docs_build_offline_with_warnings_as_errors(built_site):
    for page in ["index", "getting_started", "migration", "architecture", "changelog"]:
        assert (built_site / f"{page}.html").exists(), page
    guides = sorted(path.stem for path in (DOCS / "guides").glob("*.md"))
    assert len(guides) >= 13, guides
    for guide in guides:
        assert (built_site / "guides" / f"{guide}.html").exists(), guide
    for notebook in (ROOT / "tutorials").glob("*.ipynb"):
        page = (built_site / "tutorials" / f"{notebook.stem}.html").read_text()
        assert "cell_output" in page, f"{notebook.name} is rendered without its outputs"


@pytest.mark.slow
def test_api_reference_documents_every_public_name(built_site):
    documented = inventory(built_site)
    missing = []
    for package in public_packages():
        for name in getattr(package, "__all__", []):
            role, full = documented_as(getattr(package, name), package, name)
            if full not in documented.get(role, set()):
                missing.append(f"{package.__name__}.{name} (expected {role} {full})")
    for module in public_modules():
        if module not in documented.get("py:module", set()):
            missing.append(f"module {module}")
    assert not missing, "absent from the API reference:\n" + "\n".join(missing)


@pytest.mark.slow
def test_api_reference_documents_the_public_classes_and_functions_of_every_module(built_site):
    documented = inventory(built_site)
    roles = ["py:class", "py:exception", "py:function"]
    known = set().union(*(documented.get(role, set()) for role in roles))
    missing = []
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module_name
            if name.startswith("_") or not defined_here:
                continue
            if inspect.isclass(value) or inspect.isfunction(value):
                if f"{module_name}.{name}" not in known:
                    missing.append(f"{module_name}.{name}")
    assert not missing, "public but not in the API reference (no docstring?):\n" + "\n".join(
        missing
    )


def test_the_docs_helpers_examples_hold():
    sys.path.insert(0, str(DOCS))
    try:
        for name in ["docstrings", "api_pages", "tutorial_links"]:
            results = doctest.testmod(importlib.import_module(name))
            assert results.failed == 0, name
    finally:
        sys.path.remove(str(DOCS))


def test_the_readme_is_a_landing_page_whose_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local, "the README links to nothing"
    for link in local:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"
    guides = {path.name for path in (DOCS / "guides").glob("*.md")} - {"index.md"}
    linked = {pathlib.Path(link).name for link in local if link.startswith("docs/guides/")}
    assert guides <= linked, f"guides the README does not link: {sorted(guides - linked)}"


def test_the_tutorials_in_the_docs_are_links_to_the_tutorials(tmp_path):
    sys.path.insert(0, str(DOCS))
    try:
        links = importlib.import_module("tutorial_links").link_tutorials(
            ROOT / "tutorials", tmp_path
        )
    finally:
        sys.path.remove(str(DOCS))
    notebooks = sorted((ROOT / "tutorials").glob("*.ipynb"))
    assert [link.name for link in links] == [path.name for path in notebooks]
    for link, notebook in zip(links, notebooks, strict=True):
        assert link.is_symlink() and link.resolve() == notebook.resolve()
    assert "[0-9]*" in (DOCS / "tutorials" / "index.md").read_text()  # every notebook, in order
