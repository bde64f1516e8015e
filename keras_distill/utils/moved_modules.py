"""Old import paths of modules that moved into subpackages, kept for one release.

keras-distill 0.2 moved its flat modules into subpackages by concept
(`keras_distill.distiller` is now `keras_distill.training.distiller`). Code
that imports an old path still works: the import returns the new module and
warns once with a `DeprecationWarning` naming the new path. The names of
`keras_distill.__all__` (`kd.augment`, `kd.schedules`, ...) are unchanged and
do not warn.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "keras_distill.architectures": "keras_distill.studies.architectures",
    "keras_distill.augment": "keras_distill.training.augment",
    "keras_distill.base_distiller": "keras_distill.training.base_distiller",
    "keras_distill.beam": "keras_distill.labelling.beam",
    "keras_distill.callbacks": "keras_distill.training.callbacks",
    "keras_distill.capacity": "keras_distill.studies.capacity",
    "keras_distill.compat": "keras_distill.training.multi_worker",
    "keras_distill.datasets": "keras_distill.studies.datasets",
    "keras_distill.demo": "keras_distill.studies.demo",
    "keras_distill.distiller": "keras_distill.training.distiller",
    "keras_distill.divergences": "keras_distill.losses.divergences",
    "keras_distill.ensemble": "keras_distill.teachers.ensemble",
    "keras_distill.features": "keras_distill.objective.features",
    "keras_distill.generation": "keras_distill.teachers.generation",
    "keras_distill.initialization": "keras_distill.training.initialization",
    "keras_distill.inputs": "keras_distill.utils.inputs",
    "keras_distill.interpreter": "keras_distill.utils.tflite_interpreter",
    "keras_distill.loading": "keras_distill.labelling.reader",
    "keras_distill.markdown": "keras_distill.utils.markdown",
    "keras_distill.models": "keras_distill.utils.model_inspection",
    "keras_distill.optimize": "keras_distill.training.tfmot",
    "keras_distill.recipes": "keras_distill.studies.recipes",
    "keras_distill.report": "keras_distill.studies.compression_report",
    "keras_distill.responses": "keras_distill.labelling.responses",
    "keras_distill.schedules": "keras_distill.training.schedules",
    "keras_distill.shards": "keras_distill.labelling.shards",
    "keras_distill.targets": "keras_distill.objective.stored_kinds",
    "keras_distill.teacher_cache": "keras_distill.training.teacher_cache",
    "keras_distill.teacher_labels": "keras_distill.labelling.writer",
    "keras_distill.terms": "keras_distill.objective.terms",
    "keras_distill.tf_keras_distiller": "keras_distill.training.tf_keras_distiller",
}


def moved_warning(old: str) -> str:
    """The deprecation message for an old module path.

    Example:
    >>> moved_warning("keras_distill.distiller").split(";")[0]
    '`keras_distill.distiller` moved to `keras_distill.training.distiller` in keras-distill 0.2'
    """
    return (
        f"`{old}` moved to `{MOVED[old]}` in keras-distill 0.2; the old path will be removed "
        "in 0.3."
    )


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to its new module, with a `DeprecationWarning`.

    Example:
    >>> import warnings
    >>> _ = sys.modules.pop("keras_distill.divergences", None)  # as if never imported
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     import keras_distill.divergences as old
    >>> old.__name__, caught[0].category.__name__
    ('keras_distill.losses.divergences', 'DeprecationWarning')
    """

    def find_spec(self, fullname, path=None, target=None):
        """A spec for an old path, else None (the other finders go on)."""
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        """The new module itself, so both paths give one and the same module."""
        warnings.warn(moved_warning(spec.name), DeprecationWarning, stacklevel=4)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        """Nothing to run: the new module was executed when it was imported."""


def install() -> None:
    """Puts the finder on `sys.meta_path` (once).

    Example:
    >>> install()
    >>> sum(isinstance(f, MovedModuleFinder) for f in sys.meta_path)
    1
    """
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
