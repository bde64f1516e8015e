"""The release: sdist and wheel build offline, pass their checks, and the wheel works installed.

The wheel is installed into a fresh virtual environment that reuses this environment's
dependencies (a `.pth` file, no network) and is used from a folder outside the checkout, so a
module left out of the package or a file read from the checkout fails here.
"""

import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile

import pytest

# Builds the sdist and the wheel in subprocesses, once, in one worker: two builds at once in the
# same checkout remove each other's staging folder (`error: [Errno 2]` in a make test run).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("release")]

ROOT = pathlib.Path(__file__).parents[1]
TIMEOUT = 600


def run(command, **kwargs):
    """Runs a command; on failure, the assertion shows its output."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist and the wheel, built without network (the wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)])
    (sdist,) = out.glob("keras_distill-*.tar.gz")
    (wheel,) = out.glob("keras_distill-*.whl")
    return sdist, wheel


def test_sdist_and_wheel_pass_twine_and_check_wheel_contents(dist):
    sdist, wheel = dist
    run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    run([sys.executable, "-m", "check_wheel_contents", str(wheel)])


def test_the_wheel_holds_the_package_only(dist):
    names = zipfile.ZipFile(dist[1]).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"keras_distill", f"{dist[1].name.split('-py3')[0]}.dist-info"}, tops
    packaged = {name for name in names if name.endswith(".py")}
    in_checkout = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "keras_distill").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert in_checkout <= packaged, f"modules left out: {sorted(in_checkout - packaged)}"


def test_the_sdist_holds_what_the_tests_need(dist):
    sdist = dist[0]
    prefix = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(prefix + "/") for name in archive.getnames()}
    for needed in ["pyproject.toml", "setup.cfg", "README.md", "CHANGELOG.md", "docs/conf.py"]:
        assert needed in names, needed
    if (ROOT / ".git").exists():
        tracked = run(["git", "ls-files", "tests", "tutorials"], cwd=ROOT).stdout.split()
    else:  # not a git checkout (e.g. the sdist itself): what is on disk
        tracked = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*") if p.is_file()]
    tracked = [name for name in tracked if (ROOT / name).exists()]
    missing = sorted(set(tracked) - names)
    assert not missing, f"the sdist lacks {missing}"
    assert any(name.startswith("tests/data/") for name in names)


def fresh_environment(venv: pathlib.Path) -> pathlib.Path:
    """A new virtual environment that sees this one's packages (pip among them); its python."""
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    # The test environment's dependencies, as a path only: its .pth files (among them the
    # editable install of this checkout) are not processed.
    own_site = sysconfig.get_paths()["purelib"]
    (pathlib.Path(site.stdout.strip()) / "test_environment.pth").write_text(own_site + "\n")
    return python


@pytest.mark.slow
def test_the_installed_wheel_distils_outside_the_checkout(dist, tmp_path):
    venv = tmp_path / "venv"
    python = fresh_environment(venv)
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
        + ["--no-deps", "--no-index", str(dist[1])]
    )
    script = textwrap.dedent(
        f"""
        import pathlib
        import keras
        import keras_distill as kd

        assert pathlib.Path(kd.__file__).is_relative_to({str(venv)!r}), kd.__file__
        keras.utils.set_random_seed(0)
        data = kd.datasets.load_digits()
        def mlp(width):
            return keras.Sequential(
                [keras.Input((64,)), keras.layers.Dense(width, activation="relu"),
                 keras.layers.Dense(10)]
            )
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        teacher = mlp(64)
        teacher.compile("adam", loss)
        teacher.fit(data.x_train, data.y_train, epochs=2, verbose=0)
        distiller = kd.Distiller(teacher, mlp(16))
        distiller.compile("adam", loss, metrics=["accuracy"])
        history = distiller.fit(data.x_train, data.y_train, epochs=2, verbose=0)
        print("epochs", len(history.history["loss"]), "file", kd.__file__)
        """
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = run([str(python), "-c", script], cwd=outside, env=env)
    assert "epochs 2 file " + str(venv) in result.stdout, result.stdout
    assert str(ROOT) not in result.stdout
    help_text = run([str(venv / "bin" / "keras-distill"), "--help"], cwd=outside, env=env)
    assert "demo" in help_text.stdout and "export-micro" in help_text.stdout, help_text.stdout


def colab_install_cells() -> dict[str, list[str]]:
    """Each tutorial's install cell (its second cell), by source: tutorials sharing one run once."""
    import nbformat

    cells: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tutorials").glob("*.ipynb")):
        source = nbformat.read(path, as_version=4).cells[1].source
        cells.setdefault(source, []).append(path.name)
    return cells


REQUIREMENT = re.compile(r'KERAS_DISTILL = \(?\s*"(keras-distill(\[[\w,]+\])?) @ ([^"]+)"')


def test_the_colab_cells_install_from_a_source_that_exists():
    """Until a release is on PyPI: the project's repository (pyproject's URLs) or a wheel URL."""
    repository = re.search(
        r'Documentation = "(https://github.com/[\w-]+/[\w-]+)',
        (ROOT / "pyproject.toml").read_text(),
    )[1]
    for source, names in colab_install_cells().items():
        match = REQUIREMENT.search(source)
        assert match, f'{names}: no `KERAS_DISTILL = "keras-distill[...] @ <source>"`'
        url = match[3]
        assert url.removeprefix("git+").removesuffix(".git") == repository or url.endswith(
            ".whl"
        ), f"{names}: installs from {url}, neither {repository} nor a wheel"


@pytest.mark.slow
def test_the_colab_cells_install_the_wheel_in_a_fresh_environment(dist, tmp_path):
    """Each install cell, run as in Colab against the wheel `make dist` builds, offline."""
    wheel_url = dist[1].resolve().as_uri()
    for index, (source, names) in enumerate(colab_install_cells().items()):
        venv = tmp_path / f"venv{index}"
        python = fresh_environment(venv)
        match = REQUIREMENT.search(source)
        cell = source.replace(f'"{match[1]} @ {match[3]}"', f'"{match[1]} @ {wheel_url}"')
        as_in_colab = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('x')\n"
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env |= {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # offline
        run([str(python), "-c", as_in_colab + cell], cwd=tmp_path, env=env)
        imported = run(
            [str(python), "-c", "import keras_distill as kd; print(kd.__file__, kd.__version__)"],
            cwd=tmp_path,
            env=env,
        )
        assert imported.stdout.startswith(str(venv)), (names, imported.stdout)
