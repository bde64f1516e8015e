"""The documentation site builds offline with warnings as errors and documents every public name.

`make docs` and these tests run the same Sphinx build (MyST-NB, furo; see docs/conf.py). A
broken link or reference, a docstring that does not parse, a page outside every table of
contents or a public name missing from the API reference fails here.
"""

import doctest
import html
import importlib
import inspect
import os
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

# One build per run: the tests that read the built site run in one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("docs_site")


GIT_STATUS_BEFORE_AND_AFTER_THE_BUILD: list[str] = []


def git_status() -> str:
    """`git status --porcelain` of docs/ and tutorials/ (untracked and ignored files aside)."""
    command = ["git", "status", "--porcelain", "--untracked-files=no", "docs", "tutorials"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="session")
def built_site(tmp_path_factory):
    """Builds the site once per run (fresh, into a temporary folder); returns the HTML folder.

    Session-scoped: under pytest-xdist a worker may run other modules' tests between this
    module's, which would tear a module-scoped build down and build the site again.
    """
    out = tmp_path_factory.mktemp("docs")
    if (ROOT / ".git").exists():
        GIT_STATUS_BEFORE_AND_AFTER_THE_BUILD.append(git_status())
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q"]
    command += ["-d", str(out / "doctrees"), str(DOCS), str(out / "html")]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if (ROOT / ".git").exists():
        GIT_STATUS_BEFORE_AND_AFTER_THE_BUILD.append(git_status())
    warnings = [line for line in run.stderr.splitlines() if SPHINX_WARNING.search(line)]
    assert run.returncode == 0, "the docs build failed:\n" + "\n".join(warnings or [run.stderr])
    return out / "html"


def inventory(html: pathlib.Path) -> dict[str, set[str]]:
    """The documented objects of the built site, by role (`py:class`, ...)."""
    from sphinx.util.inventory import InventoryFile

    with open(html / "objects.inv", "rb") as stream:
        loaded = InventoryFile.load(stream, "", lambda base, uri: uri)
    entries = loaded.data if hasattr(loaded, "data") else loaded
    # autodoc also records a class under its defining module (its canonical name), as an alias
    # whose link is the public entry: links to that path resolve; it has no page or entry of its own
    return {
        role: {name for name, item in names.items() if _anchor(item) == name or "_src" not in name}
        for role, names in entries.items()
    }


def _anchor(item) -> str:
    uri = item.uri if hasattr(item, "uri") else item[2]
    return uri.rsplit("#", 1)[-1]


def public_names() -> dict[str, tuple[str, str]]:
    """Every name in the `__all__` of keras_distill and its public subpackages and modules.

    Returns:
        `{package.name: (role, documented as)}`: classes and functions are documented once, at
        their first public path (`kd.label_with_teacher`, also `kd.labelling.label_with_teacher`).
    """
    package = importlib.import_module("keras_distill")
    packages = ["keras_distill"] + sorted(
        info.name
        for info in pkgutil.walk_packages(package.__path__, "keras_distill.")
        if not any(part.startswith("_") for part in info.name.split("."))
        and info.name != "keras_distill.version"
    )
    homes: dict[int, str] = {}
    names = {}
    for package_name in packages:
        module = importlib.import_module(package_name)
        for name in getattr(module, "__all__", []):
            value = getattr(module, name)
            full = f"{package_name}.{name}"
            if isinstance(value, types.ModuleType):
                names[full] = ("py:module", value.__name__)
            elif inspect.isclass(value) or inspect.isfunction(value):
                role = "py:function" if inspect.isfunction(value) else "py:class"
                if inspect.isclass(value) and issubclass(value, BaseException):
                    role = "py:exception"
                names[full] = (role, homes.setdefault(id(value), full))
            else:
                names[full] = ("py:data", full)
    return names


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
def test_api_reference_documents_every_public_name_under_its_public_path(built_site):
    documented = inventory(built_site)
    missing = [
        f"{name} (expected {role} {full})"
        for name, (role, full) in public_names().items()
        if full not in documented.get(role, set())
    ]
    assert not missing, "absent from the API reference:\n" + "\n".join(missing)
    internal = sorted(name for names in documented.values() for name in names if "._src" in name)
    assert not internal, f"internal paths in the API reference: {internal[:10]}"


@pytest.mark.slow
def test_the_distiller_page_shows_its_real_parameters_and_formula(built_site):
    page = (built_site / "api" / "generated" / "keras_distill.Distiller.html").read_text()
    text = re.sub(r"<[^>]+>", "", page)
    signature = re.search(r"class keras_distill\.Distiller\((.*?)\)\[source\]", text, re.S)
    assert signature, "no signature with a [source] link on the Distiller page"
    parameters = html.unescape(signature[1])
    for parameter in ["teacher", "student", "temperature: float = 1.0", "alpha: float = 0.5"]:
        assert parameter in parameters, parameters
    assert "*args" not in parameters, parameters
    formula = re.search(r"<pre>(.*?)</pre>", page, re.S)
    formula_text = html.unescape(re.sub(r"<[^>]+>", "", formula[1])) if formula else ""
    assert "+ (1 - alpha) * distillation_loss" in formula_text, formula_text


@pytest.mark.slow
def test_no_class_page_shows_a_signature_of_args_and_kwargs_alone(built_site):
    pages = sorted((built_site / "api" / "generated").glob("keras_distill*.html"))
    assert len(pages) > 90, len(pages)
    generic = re.compile(r"\(((teacher=None, student=None, )?\*args, \*\*kwargs)\)")
    shown = [
        page.name
        for page in pages
        if re.search(
            r"class keras_distill\S*" + generic.pattern, re.sub(r"<[^>]+>", "", page.read_text())
        )
    ]
    assert not shown, f"classes documented as (*args, **kwargs): {shown}"


@pytest.mark.slow
def test_building_the_docs_leaves_git_status_clean(built_site):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    before, after = GIT_STATUS_BEFORE_AND_AFTER_THE_BUILD
    assert after == before, f"the docs build changed tracked files:\n{after}"


@pytest.mark.slow
def test_commands_keep_their_double_dashes(built_site):
    page = (built_site / "evidence" / "quality.html").read_text()  # "parts run with --task"
    assert "--task" in page and "\u2013task" not in page


def test_the_docs_helpers_examples_hold():
    sys.path.insert(0, str(DOCS))
    try:
        for name in ["docstrings", "api_pages", "tutorial_links", "external_links"]:
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


MACHINE_PATH = re.compile(
    r"(/(home|Users|root|work|tmp|var/folders)/[\w.-]+|site-packages|[A-Z]:\\\\Users)"
)


def committed(*folders: str) -> list[pathlib.Path]:
    """The tracked text files of the docs and the tutorials (what is on disk without git)."""
    if (ROOT / ".git").exists():
        command = ["git", "ls-files", *folders]
        names = subprocess.run(command, cwd=ROOT, capture_output=True, text=True).stdout.split()
        paths = [ROOT / name for name in names]
    else:
        paths = [path for folder in folders for path in (ROOT / folder).rglob("*")]
    return [p for p in paths if p.is_file() and p.suffix in (".md", ".ipynb", ".py", ".css")]


def test_committed_docs_and_notebooks_name_no_path_of_a_machine():
    found = []
    for path in committed("docs", "tutorials", "README.md"):
        for match in MACHINE_PATH.finditer(path.read_text()):
            found.append(f"{path.relative_to(ROOT)}: {match[0]}")
    assert not found, "absolute paths of a machine:\n" + "\n".join(found)


def named_readme_sections(text: str) -> list[str]:
    """The README sections a text names: `the README's "Section" section`."""
    return re.findall(r"README's \"([^\"]+)\"", text)


def test_every_readme_section_and_doc_that_tutorials_and_guides_name_exists():
    headings = set(re.findall(r"^#+ (.+?)\s*$", README.read_text(), re.M))
    repository_file = re.compile(r"github\.com/keras-distill/keras-distill/blob/main/([\w/.-]+)")
    missing = []
    for path in committed("docs", "tutorials"):
        text = path.read_text()
        missing += [
            f"{path.name}: README section {name!r}"
            for name in named_readme_sections(text)
            if name not in headings
        ]
        missing += [
            f"{path.name}: {name}"
            for name in repository_file.findall(text)
            if not (ROOT / name).exists()
        ]
    assert not missing, "named but absent:\n" + "\n".join(missing)


def python_blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


@pytest.mark.slow
@pytest.mark.parametrize("page", ["index.md", "getting_started.md", "guides/losses.md"])
def test_the_code_of_the_landing_page_and_the_losses_guide_runs_as_pasted(page, tmp_path):
    blocks = python_blocks(DOCS / page)
    assert blocks, page
    code = blocks[0] if page == "index.md" else "\n".join(blocks)  # index: the micro export aside
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    if page == "index.md":
        teacher = float(re.search(r"^teacher ([\d.]+)", run.stdout, re.M)[1])
        student = float(re.search(r"^student ([\d.]+)", run.stdout, re.M)[1])
        assert teacher >= 0.95 and student >= 0.85, run.stdout
        assert (tmp_path / "student.keras").exists()


def test_the_user_pages_leave_contributor_matters_to_the_contributing_page():
    for page in ["index.md", "getting_started.md"]:
        text = (DOCS / page).read_text()
        for contributor_matter in [".ci/run", "../shared", "612 tests", "make test"]:
            assert contributor_matter not in text, f"{page}: {contributor_matter}"
    contributing = (DOCS / "contributing.md").read_text()
    assert ".ci/run" in contributing and "make test" in contributing
