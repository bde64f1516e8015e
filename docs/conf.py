"""Sphinx configuration of the keras-distill documentation (`make docs`).

Sphinx with MyST-NB and the furo theme, as the JAX and Flax documentation: the guides are
Markdown, the tutorials are the notebooks of `tutorials/` rendered with their committed outputs
(never executed here; `tests/test_tutorials.py` executes them), the API reference is generated
from the docstrings (Google style, through napoleon) and the evidence pages include
`benchmarks/results/` as it is. Warnings are errors (`-W`), and every cross-reference must
resolve (`nitpicky`), except those into other projects (no network: no intersphinx).
"""

import importlib
import importlib.util
import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import api_pages  # noqa: E402  (needs the checkout on sys.path)
import tutorial_links  # noqa: E402

import keras_distill  # noqa: E402

project = "keras-distill"
author = "keras-distill developers"
copyright = "keras-distill developers"
release = keras_distill.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
if importlib.util.find_spec("sphinx_copybutton"):
    extensions.append("sphinx_copybutton")

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]  # benchmark result files start at their own heading levels
root_doc = "index"

# Notebooks are shown with the outputs of the committed full run, never re-executed.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"keras-distill {release}"
html_static_path = []

# The API reference: Google-style docstrings, type hints in the signatures.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("Call arguments", "params_style")]  # as Keras layers document call()
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
if importlib.util.find_spec("apache_beam") is None:
    autodoc_mock_imports = ["apache_beam"]

# Every reference inside the project must resolve; names of other projects (Keras, TensorFlow,
# NumPy, the standard library) cannot be checked offline and are not links.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(keras|tf|tensorflow|tf_keras|np|numpy|apache_beam|beam|keras_hub)(\..*)?"),
    (
        r"py:.*",
        r"(argparse|importlib|collections|typing|pathlib|os|io|abc|dataclasses|enum|json|types)\..*",
    ),
    (r"py:class", r"keras_distill\..*\._\w+"),  # private base classes are not documented
    (r"py:.*", r"(numpy\.typing|np\.typing|numpy\.ndarray|Path|Callable|Iterable|Sequence)"),
    (r"py:.*", r"(Mapping|Iterator|Any|Optional|Union|Literal|PathLike|ArrayLike|NoneType)"),
    (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|object|type|callable|None)"),
]

api_pages.write(DOCS / "api" / "generated")
tutorial_links.link_tutorials(ROOT / "tutorials", DOCS / "tutorials")


def setup(app):
    """Reads the docstrings Keras style (see `docs/docstrings.py`), after napoleon."""
    import docstrings

    app.connect("autodoc-process-docstring", docstrings.process_docstring, priority=600)
    app.connect("missing-reference", resolve_reexport)


def resolve_reexport(app, env, node, contnode):
    """Resolves a reference to a re-exported name (`keras_distill._src.micro.export`, `kd.X`)."""
    if node.get("refdomain") != "py":
        return None
    canonical = api_pages.canonical_name(node["reftarget"])
    if canonical is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode
    )
