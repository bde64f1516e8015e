"""Every public function and class documents itself with an example that runs."""

import doctest
import importlib
import importlib.util
import inspect
import pkgutil

import pytest

import keras_distill

OPTIONAL = {
    "keras_distill.labelling.beam": "apache_beam",
    "keras_distill.labelling.beam_handlers": "apache_beam",
}  # modules of optional extras
MODULES = [
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(keras_distill.__path__, prefix="keras_distill.")
    if not info.name.rsplit(".", 1)[-1].startswith("_")
    and importlib.util.find_spec(OPTIONAL.get(info.name, "keras")) is not None
]


def public_objects():
    for module in MODULES:
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize(
    "name, obj", list(public_objects()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_public_object_has_a_docstring_with_an_example(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert "Example:" in doc and ">>>" in doc, f"{name} has no runnable example"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_all_names_the_public_api():
    assert set(keras_distill.__all__) == {
        "BaseDistiller",
        "augment",
        "ensemble",
        "features",
        "generation",
        "InitReport",
        "OnPolicyDistiller",
        "init_from_teacher",
        "CompressionReport",
        "Distiller",
        "compare",
        "recipes",
        "responses",
        "sweep",
        "teacher_assistant_chain",
        "TemperatureScheduler",
        "export_micro",
        "label_with_teacher",
        "load_teacher_labels",
        "losses",
        "micro",
        "schedules",
        "__version__",
    }
    for name in keras_distill.__all__:
        assert hasattr(keras_distill, name)
