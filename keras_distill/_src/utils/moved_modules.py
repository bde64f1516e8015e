"""Old import paths of modules that moved into subpackages, kept for one release.

keras-distill 0.2 moved its flat modules into subpackages by concept
(`keras_distill.distiller` is now `keras_distill._src.training.distiller`). Code
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
    "keras_distill.base_distiller": "keras_distill._src.training.base_distiller",
    "keras_distill.beam": "keras_distill.labelling.beam",
    "keras_distill.callbacks": "keras_distill._src.training.callbacks",
    "keras_distill.capacity": "keras_distill._src.studies.capacity",
    "keras_distill.compat": "keras_distill._src.training.multi_worker",
    "keras_distill.demo": "keras_distill._src.studies.demo",
    "keras_distill.distiller": "keras_distill._src.training.distiller",
    "keras_distill.divergences": "keras_distill._src.losses.divergences",
    "keras_distill.ensemble": "keras_distill._src.teachers.ensemble",
    "keras_distill.features": "keras_distill._src.objective.features",
    "keras_distill.initialization": "keras_distill._src.training.initialization",
    "keras_distill.inputs": "keras_distill._src.utils.inputs",
    "keras_distill.interpreter": "keras_distill._src.utils.tflite_interpreter",
    "keras_distill.loading": "keras_distill._src.labelling.reader",
    "keras_distill.markdown": "keras_distill._src.utils.markdown",
    "keras_distill.models": "keras_distill._src.utils.model_inspection",
    "keras_distill.optimize": "keras_distill._src.training.tfmot",
    "keras_distill.report": "keras_distill._src.studies.compression_report",
    "keras_distill.responses": "keras_distill._src.labelling.responses",
    "keras_distill.shards": "keras_distill._src.labelling.shards",
    "keras_distill.targets": "keras_distill._src.objective.stored_kinds",
    "keras_distill.teacher_cache": "keras_distill._src.training.teacher_cache",
    "keras_distill.teacher_labels": "keras_distill._src.labelling.writer",
    "keras_distill.terms": "keras_distill._src.objective.terms",
    "keras_distill.tf_keras_distiller": "keras_distill._src.training.tf_keras_distiller",
}


def moved_warning(old: str) -> str:
    """The deprecation message for an old module path.

    Example:
    >>> moved_warning("keras_distill.distiller").split(";")[0]
    '`keras_distill.distiller` moved to `keras_distill._src.training.distiller` in ...'
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
    ('keras_distill._src.losses.divergences', 'DeprecationWarning')
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
