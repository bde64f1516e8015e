"""Writes the API reference pages from the package itself, at every docs build.

One page per subpackage of `keras_distill` (and one for the top-level package): the
subpackage's docstring, a table of its `__all__` linking each name to where it is defined, and
`automodule` for each of its modules. A module or a name someone adds appears by itself;
`tests/test_docs_site.py` checks the built reference against `__all__`.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import types

PACKAGE = "keras_distill"
SKIPPED_MODULES = {"keras_distill.__main__"}


def public_modules(package: types.ModuleType) -> list[str]:
    """The dotted names of a package's public modules, sorted, subpackages excluded.

    Args:
        package: an imported package.

    Returns:
        The module names directly inside `package` whose names do not start with `_`.
    """
    names = []
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        leaf = info.name.rsplit(".", 1)[1]
        if info.ispkg or leaf.startswith("_") or info.name in SKIPPED_MODULES:
            continue
        names.append(info.name)
    return sorted(names)


def subpackages() -> list[str]:
    """The dotted names of the public subpackages of `keras_distill`, sorted."""
    package = importlib.import_module(PACKAGE)
    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.__path__, PACKAGE + ".")
        if info.ispkg and not info.name.rsplit(".", 1)[1].startswith("_")
    )


def reference(package: types.ModuleType, name: str) -> str:
    """A reST cross-reference to `package.name` where it is defined.

    Args:
        package: the package whose `__all__` holds `name`.
        name: a public name of `package`.

    Returns:
        A role linking to the module, class or function's own page, or to the data entry
        documented on the package page.
    """
    value = getattr(package, name)
    if isinstance(value, types.ModuleType):
        return f":py:mod:`{name} <{value.__name__}>`"
    if inspect.isclass(value) or inspect.isfunction(value):
        kind = "func" if inspect.isfunction(value) else "class"
        if issubclass_of_exception(value):
            kind = "exc"
        return f":py:{kind}:`{name} <{value.__module__}.{value.__qualname__}>`"
    return f":py:data:`{name} <{package.__name__}.{name}>`"


def issubclass_of_exception(value: object) -> bool:
    """Whether `value` is an exception class (documented as `py:exception`)."""
    return inspect.isclass(value) and issubclass(value, BaseException)


def is_data(value: object) -> bool:
    """Whether a public name holds data (documented on its package's page)."""
    return not (
        isinstance(value, types.ModuleType) or inspect.isclass(value) or inspect.isfunction(value)
    )


def data_description(value: object) -> str:
    """One line on a public data name: its keys, or its value."""
    if isinstance(value, dict):
        return "Keys: " + ", ".join(f"``{key}``" for key in sorted(value)) + "."
    return f"``{value!r}``"


def package_page(name: str) -> str:
    """The reST page of one package: docstring, `__all__` table, data, its modules."""
    package = importlib.import_module(name)
    title = f"``{name}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {name}", "   :no-members:", ""]
    exported = sorted(getattr(package, "__all__", []), key=str.lower)
    if exported:
        lines += [f"Public names (``{name}.__all__``):", "", ".. list-table::", ""]
        lines += [f"   * - {reference(package, entry)}" for entry in exported]
        lines.append("")
    for entry in exported:
        value = getattr(package, entry)
        if is_data(value):
            lines += [f".. py:data:: {entry}", f"   :type: {type(value).__name__}", ""]
            lines += [f"   {data_description(value)}", ""]
    for module in public_modules(package):
        heading = f"``{module}``"
        lines += [heading, "-" * len(heading), "", f".. automodule:: {module}", ""]
    return "\n".join(lines)


def write(folder: pathlib.Path) -> list[pathlib.Path]:
    """Writes one page per package into `folder`, leaving unchanged pages untouched.

    Args:
        folder: where the generated pages go (`docs/api/generated`, ignored by git).

    Returns:
        The pages, top-level package first.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pages = []
    for name in [PACKAGE, *subpackages()]:
        page = folder / f"{name}.rst"
        text = package_page(name)
        if not page.exists() or page.read_text() != text:
            page.write_text(text)
        pages.append(page)
    for stale in set(folder.glob("*.rst")) - set(pages):
        stale.unlink()
    return pages


def canonical_name(target: str) -> str | None:
    """Where a public name of keras-distill is defined, if `target` is a re-export of it.

    Docstrings and guides name things as users import them (`keras_distill._src.micro.export`,
    `kd.Distiller`); the reference documents each where it is defined. Used to resolve
    such references (`missing-reference` in `docs/conf.py`).

    Args:
        target: A dotted name, `keras_distill.` or `kd.` first.

    Returns:
        The defining module's path and the object's qualified name, or None when `target` is
        not a keras-distill class or function, or is already where it is defined.

    Example:
    >>> canonical_name("kd.micro.MicroExportError")
    'keras_distill._src.micro.errors.MicroExportError'
    >>> canonical_name("keras_distill.nothing") is None
    True
    """
    parts = target.split(".")
    if parts[0] == "kd":
        parts[0] = PACKAGE
    if parts[0] != PACKAGE:
        return None
    value: object = None
    for length in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:length]))
        except ImportError:
            continue
        for attribute in parts[length:]:
            value = getattr(value, attribute, None)
        break
    if not (inspect.isclass(value) or inspect.isfunction(value)):
        return None
    canonical = f"{value.__module__}.{value.__qualname__}"
    return None if canonical == target else canonical
