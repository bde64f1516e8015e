"""Writes the API reference pages from the package's public names, at every docs build.

The reference documents exactly what users import: the names in the `__all__` of
`keras_distill` and of its public subpackages and modules, under their public paths
(`keras_distill.Distiller`, `keras_distill.losses.KLDivergence`), never under `_src`.
One page per package (its docstring and a table of its names with their one-line summaries)
and one page per class or function. A name exported twice (`kd.label_with_teacher` and
`kd.labelling.label_with_teacher`) is documented once, at its first public path, and linked
from both tables. `tests/test_docs_site.py` checks the built reference against `__all__`.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import types

from docstrings import inline_code

PACKAGE = "keras_distill"


def public_packages() -> list[str]:
    """`keras_distill`, then every public subpackage and module inside it, sorted.

    Returns:
        Dotted names with no part starting with `_` (`keras_distill.labelling.beam`
        included), `keras_distill.version` and `keras_distill.__main__` left out.

    Example:
    >>> public_packages()[:2]
    ['keras_distill', 'keras_distill.architectures']
    """
    package = importlib.import_module(PACKAGE)
    names = [
        info.name
        for info in pkgutil.walk_packages(package.__path__, PACKAGE + ".")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return [PACKAGE, *sorted(name for name in names if name != f"{PACKAGE}.version")]


def exported(package_name: str) -> list[str]:
    """The names in a package's `__all__`, sorted case-insensitively."""
    package = importlib.import_module(package_name)
    return sorted(getattr(package, "__all__", []), key=str.lower)


def kind(value: object) -> str:
    """How the reference documents a value: `module`, `class`, `exception`, `function`, `data`."""
    if isinstance(value, types.ModuleType):
        return "module"
    if inspect.isclass(value):
        return "exception" if issubclass(value, BaseException) else "class"
    return "function" if inspect.isfunction(value) else "data"


def homes() -> dict[int, str]:
    """The public path of every exported class and function, by `id`: its first public path.

    Example:
    >>> import keras_distill as kd
    >>> homes()[id(kd.labelling.label_with_teacher)]
    'keras_distill.label_with_teacher'
    """
    result: dict[int, str] = {}
    for package_name in public_packages():
        package = importlib.import_module(package_name)
        for name in exported(package_name):
            value = getattr(package, name)
            if kind(value) in ("class", "exception", "function"):
                result.setdefault(id(value), f"{package_name}.{name}")
    return result


def summary(value: object) -> str:
    """The first line of a value's docstring, as reST (Markdown backticks doubled)."""
    doc = inspect.getdoc(value) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    return inline_code(line)


def reference(package_name: str, name: str, home: dict[int, str]) -> str:
    """A reST cross-reference to the public name `package_name.name`, shown as `name`."""
    value = getattr(importlib.import_module(package_name), name)
    role = {"module": "mod", "class": "class", "exception": "exc", "function": "func"}
    target = home.get(id(value), f"{package_name}.{name}")
    if kind(value) == "module":
        target = value.__name__
    return f":py:{role.get(kind(value), 'data')}:`{name} <{target}>`"


def data_description(value: object) -> str:
    """One line on a public data name: its keys, or its value."""
    if isinstance(value, dict):
        return "Keys: " + ", ".join(f"``{key}``" for key in sorted(value)) + "."
    return f"``{value!r}``"


def heading(text: str, underline: str) -> list[str]:
    """A reST title: the text, underlined."""
    return [text, underline * len(text), ""]


def package_page(package_name: str, home: dict[int, str]) -> str:
    """The reST page of one package: docstring, its names with summaries, data, its pages."""
    package = importlib.import_module(package_name)
    lines = heading(f"``{package_name}``", "=")
    lines += [f".. automodule:: {package_name}", "   :no-members:", ""]
    lines += [".. list-table::", "   :widths: 30 70", ""]
    own_pages = []
    for name in exported(package_name):
        value = getattr(package, name)
        lines += [f"   * - {reference(package_name, name, home)}", f"     - {summary(value)}"]
        if home.get(id(value)) == f"{package_name}.{name}":
            own_pages.append(f"{package_name}.{name}")
    lines.append("")
    for name in exported(package_name):
        value = getattr(package, name)
        if kind(value) == "data":
            lines += [f".. py:data:: {name}", f"   :type: {type(value).__name__}", ""]
            lines += [f"   {data_description(value)}", ""]
    if own_pages:
        lines += [".. toctree::", "   :hidden:", ""] + [f"   {page}" for page in own_pages]
    return "\n".join(lines) + "\n"


def name_page(full_name: str) -> str:
    """The reST page of one public class or function, documented under `full_name`."""
    package_name, name = full_name.rsplit(".", 1)
    value = getattr(importlib.import_module(package_name), name)
    directive = {"class": "autoclass", "exception": "autoexception"}.get(kind(value))
    lines = heading(name, "=")  # the signature below shows the full path
    lines += [f".. currentmodule:: {package_name}", ""]
    lines += [f".. {directive or 'autofunction'}:: {name}", ""]
    return "\n".join(lines)


def packages_table() -> str:
    """The reference front page in reST: each package with its one-line summary, a toctree."""
    lines = [".. list-table::", "   :widths: 35 65", ""]
    for name in public_packages():
        package = importlib.import_module(name)
        lines += [f"   * - :doc:`{name} <generated/{name}>`", f"     - {summary(package)}"]
    lines += ["", ".. toctree::", "   :hidden:", ""]
    return "\n".join(lines + [f"   generated/{name}" for name in public_packages()]) + "\n"


def write(folder: pathlib.Path) -> list[pathlib.Path]:
    """Writes the package pages and the name pages into `folder`, unchanged pages untouched.

    Args:
        folder: where the generated pages go (`docs/api/generated`, ignored by git).

    Returns:
        The package pages, top-level package first.
    """
    folder.mkdir(parents=True, exist_ok=True)
    home = homes()
    texts = {f"{name}.rst": package_page(name, home) for name in public_packages()}
    texts |= {f"{full}.rst": name_page(full) for full in home.values()}
    texts["packages.rst.txt"] = packages_table()
    for file_name, text in texts.items():
        page = folder / file_name
        if not page.exists() or page.read_text() != text:
            page.write_text(text)
    for stale in {path.name for path in folder.glob("*.rst*")} - set(texts):
        (folder / stale).unlink()
    return [folder / f"{name}.rst" for name in public_packages()]


def public_name(target: str, home: dict[int, str]) -> str | None:
    """The public path a dotted name refers to, when it is another path of a public object.

    Docstrings, type hints and base classes name things where they are defined
    (`keras_distill._src.micro.exporter.export`) or as users import them (`kd.Distiller`);
    the reference documents each at its public path. Used to resolve such references
    (`missing-reference` in `docs/conf.py`).

    Args:
        target: A dotted name, `keras_distill.` or `kd.` first; may end with attributes
            (`kd.Distiller.compile`).
        home: `homes()`.

    Returns:
        The public path, or None when `target` is not a keras-distill object or is already
        its public path.

    Example:
    >>> public_name("keras_distill._src.micro.errors.MicroExportError", homes())
    'keras_distill.micro.MicroExportError'
    >>> public_name("kd.Distiller.compile", homes())
    'keras_distill.Distiller.compile'
    >>> public_name("TeacherLabelsError", homes())
    'keras_distill.labelling.TeacherLabelsError'
    >>> public_name("keras_distill.nothing", homes()) is None
    True
    """
    if "." not in target:  # a bare name in a docstring: the public name ending with it
        matches = {public for public in home.values() if public.rsplit(".", 1)[1] == target}
        return matches.pop() if len(matches) == 1 else None
    parts = target.split(".")
    if parts[0] == "kd":
        parts[0] = PACKAGE
    if parts[0] != PACKAGE:
        return None
    for length in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:length]))
        except ImportError:
            continue
        rest = parts[length:]
        for index, attribute in enumerate(rest):
            value = getattr(value, attribute, None)
            if id(value) in home:
                public = ".".join([home[id(value)], *rest[index + 1 :]])
                return None if public == target else public
        return None
    return None


def public_mention(target: str, home: dict[int, str]) -> str:
    """How the docs name `target`, an internal path in a docstring: its public path, `kd.` first.

    Args:
        target: A dotted name under `keras_distill._src`.
        home: `homes()`.

    Returns:
        The public path of the object (`kd.losses.get`), the public package of the same name
        for a module (`kd.augment`), or `target` itself when it has no public counterpart.

    Example:
    >>> public_mention("keras_distill._src.losses.losses.get", homes())
    'kd.losses.get'
    >>> public_mention("keras_distill._src.training.augment", homes())
    'kd.augment'
    """
    public = public_name(target, home)
    if public is None:
        package = f"{PACKAGE}.{target.rsplit('.', 1)[1]}"
        public = package if package in public_packages() else None
    return target if public is None else public.replace(PACKAGE, "kd", 1)
