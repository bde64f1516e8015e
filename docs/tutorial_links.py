"""Shows the notebooks of `tutorials/` in the docs without copying them.

At every build, `docs/tutorials/` gets one symbolic link per notebook (git-ignored, so that
linters and git see each notebook once); MyST-NB renders them with their committed outputs.
"""

from __future__ import annotations

import os
import pathlib


def link_tutorials(tutorials: pathlib.Path, folder: pathlib.Path) -> list[pathlib.Path]:
    """Links every notebook of `tutorials` into `folder`, removing links to notebooks gone.

    Args:
        tutorials: The folder of the notebooks (`tutorials/`).
        folder: Where the docs read them (`docs/tutorials/`).

    Returns:
        The links, sorted.

    Example:
    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "nb").mkdir(); _ = (root / "nb" / "01_a.ipynb").write_text("{}")
    >>> [link.name for link in link_tutorials(root / "nb", root / "docs")]
    ['01_a.ipynb']
    """
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for notebook in sorted(tutorials.glob("*.ipynb")):
        link = folder / notebook.name
        if not (link.is_symlink() and link.resolve() == notebook.resolve()):
            # made beside it, then renamed into place: two builds at once both succeed
            temporary = folder / f".{notebook.name}.{os.getpid()}.link"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(notebook.resolve())
            temporary.replace(link)
        links.append(link)
    for stale in set(folder.glob("*.ipynb")) - set(links):
        stale.unlink()
    return links
