"""Every exported name documents itself with an example that runs; internals need none."""

import doctest
import importlib
import importlib.util
import inspect
import pkgutil
import tempfile

import pytest

import keras_distill

OPTIONAL = {
    "keras_distill.labelling.beam": "apache_beam",
    "keras_distill._src.labelling.beam": "apache_beam",
}  # modules of optional extras
ALL_MODULES = [
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(keras_distill.__path__, prefix="keras_distill.")
    if info.name != "keras_distill.__main__"
    and importlib.util.find_spec(OPTIONAL.get(info.name, "keras")) is not None
]
PUBLIC_MODULES = [keras_distill] + [
    module
    for module in ALL_MODULES
    if "._src" not in module.__name__ and module.__name__ != "keras_distill.version"
]


def exported_objects():
    """(public path, object) for every class and function a public module exports."""
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj


EXPORTED = dict(exported_objects())


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_object_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(EXPORTED[name]) or ""
    assert "Example:" in doc and ">>>" in doc, f"{name} has no runnable example"


@pytest.mark.parametrize("module", ALL_MODULES + [keras_distill], ids=lambda m: m.__name__)
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' temporary folders
    monkeypatch.chdir(tmp_path)  # and the files they write by name
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_public_module_declares_its_names():
    for module in PUBLIC_MODULES:
        assert module.__all__, module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_the_public_surface_is_about_120_names():
    names = {f"{m.__name__}.{n}" for m in PUBLIC_MODULES for n in m.__all__}
    assert 80 <= len(names) <= 140, len(names)
