"""What users of keras-distill 0.1 had keeps working: names, module paths and saved files."""

import importlib
import sys
import warnings

import pytest

import keras_distill as kd
from keras_distill._src.utils.moved_modules import MOVED

# `keras_distill.__all__` as of 0.1.0 (before the subpackage move)
ALL_0_1 = {
    "BaseDistiller",
    "CompressionReport",
    "Distiller",
    "InitReport",
    "TemperatureScheduler",
    "__version__",
    "augment",
    "compare",
    "ensemble",
    "export_micro",
    "features",
    "generation",
    "init_from_teacher",
    "label_with_teacher",
    "load_teacher_labels",
    "losses",
    "micro",
    "recipes",
    "responses",
    "schedules",
    "sweep",
    "teacher_assistant_chain",
}
# submodules the 0.1 tutorials imported with `from keras_distill import ...`
TUTORIAL_SUBMODULES = [
    "augment",
    "beam",
    "datasets",
    "generation",
    "losses",
    "markdown",
    "micro",
    "optimize",
    "recipes",
    "responses",
    "schedules",
]


DEPRECATED_0_1 = {"ensemble", "export_micro", "features", "responses"}


def test_every_0_1_name_is_still_offered():
    assert ALL_0_1 - DEPRECATED_0_1 <= set(kd.__all__)
    for name in ALL_0_1:
        assert getattr(kd, name) is not None


@pytest.mark.parametrize("name", sorted(DEPRECATED_0_1))
def test_a_0_1_name_that_moved_warns_with_its_new_name(name):
    with pytest.warns(DeprecationWarning, match=r"use `kd\."):
        getattr(kd, name)


@pytest.mark.parametrize("name", TUTORIAL_SUBMODULES)
def test_tutorial_submodules_import_from_the_package(name):
    module = importlib.import_module(f"keras_distill.{name}")
    namespace = {}
    exec(f"from keras_distill import {name} as imported", namespace)
    assert namespace["imported"] is module


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_new_module_with_a_deprecation_warning(old, monkeypatch):
    new = importlib.import_module(MOVED[old])
    monkeypatch.delitem(sys.modules, old, raising=False)
    if old.rsplit(".", 1)[1] in vars(kd):
        monkeypatch.delattr(kd, old.rsplit(".", 1)[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    sys.modules.pop(old)  # leave no old path behind for later tests (and doctests) to find
    assert module is new
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert any(MOVED[old] in message for message in messages), messages


def test_the_public_names_warn_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from keras_distill import augment, datasets, schedules  # noqa: F401

        assert kd.Distiller.__module__ == "keras_distill._src.training.distiller"
