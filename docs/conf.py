"""Sphinx configuration of the keras-distill documentation (`make docs`).

Sphinx with MyST-NB and the furo theme, as the JAX and Flax documentation: the guides are
Markdown, the tutorials are the notebooks of `tutorials/` rendered with their committed outputs
(never executed here; `tests/test_tutorials.py` executes them), the API reference is generated
from the docstrings (Google style, through napoleon) and the evidence pages include
`benchmarks/results/` as it is. Warnings are errors (`-W`), and every cross-reference must
resolve (`nitpicky`). Keras and TensorFlow names link to keras.io and tensorflow.org through
`docs/external_links.py` (offline: neither site publishes an intersphinx inventory).
"""

import importlib
import importlib.util
import inspect
import os
import pathlib
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import api_pages  # noqa: E402  (needs the checkout on sys.path)
import external_links  # noqa: E402
import tutorial_links  # noqa: E402
from docutils import nodes  # noqa: E402
from sphinx.util.inspect import signature, stringify_signature  # noqa: E402

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
    "sphinx.ext.viewcode",  # a [source] link on every class and function
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
smartquotes = False  # `--flags` and quotes stay as typed, so commands copy as they are

html_theme = "furo"
html_title = f"keras-distill {release}"
html_static_path = ["_static"]
html_css_files = ["wide_tables.css"]
REPOSITORY = "https://github.com/keras-distill/keras-distill"
html_theme_options = {
    "source_repository": REPOSITORY,
    "source_branch": "main",
    "source_directory": "docs/",
    "footer_icons": [{"name": "GitHub", "url": REPOSITORY, "html": "GitHub", "class": ""}],
}

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
    (r"py:.*", r"keras\.src\..*"),  # Keras internals without a public name
    (r"py:.*", r"keras_distill\._src\..*"),  # internal types named in signatures, not documented
    (r"py:.*", r"(numpy\.typing|np\.typing|numpy\.ndarray|Path|Callable|Iterable|Sequence)"),
    (r"py:.*", r"(Mapping|Iterator|Any|Optional|Union|Literal|PathLike|ArrayLike|NoneType)"),
    (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|object|type|callable|None)"),
]

api_pages.write(DOCS / "api" / "generated")
PUBLIC_HOMES = api_pages.homes()
tutorial_links.link_tutorials(ROOT / "tutorials", DOCS / "tutorials")


def setup(app):
    """Reads the docstrings Keras style (see `docs/docstrings.py`), after napoleon."""
    import docstrings

    app.connect("autodoc-process-docstring", docstrings.process_docstring, priority=600)
    app.connect("autodoc-process-docstring", public_paths_in_docstring, priority=700)
    app.connect("autodoc-process-signature", constructor_signature)
    app.connect("missing-reference", resolve_public_name)
    app.connect("missing-reference", link_keras_and_tensorflow)


INTERNAL_NAME = re.compile(r"keras_distill\._src(?:\.\w+)+")


def public_paths_in_docstring(app, what, name, obj, options, lines):
    """Names in docstrings as users import them (`kd.losses.get`), not where they are defined."""
    lines[:] = [
        INTERNAL_NAME.sub(lambda match: api_pages.public_mention(match[0], PUBLIC_HOMES), line)
        for line in lines
    ]


def constructor_signature(app, what, name, obj, options, args, return_annotation):
    """A class's signature from its `__init__`, where autodoc would read a `__new__`.

    Keras' `Layer.__new__(cls, *args, **kwargs)` (and `Distiller.__new__`, which forwards to
    it) come first in autodoc's search, so every Keras subclass would show `(*args, **kwargs)`
    instead of its own parameters.
    """
    if what not in ("class", "exception") or not inspect.isfunction(getattr(obj, "__new__", None)):
        return None
    if obj.__init__ is object.__init__:  # a NamedTuple: its generated __new__ is the signature
        return None
    init_signature = signature(obj.__init__, bound_method=True)
    return stringify_signature(
        init_signature, show_return_annotation=False, unqualified_typehints=True
    ), return_annotation


def resolve_public_name(app, env, node, contnode):
    """Resolves another path of a public name (`keras_distill._src...`, `kd.X`) to it."""
    if node.get("refdomain") != "py":
        return None
    public = api_pages.public_name(node["reftarget"], PUBLIC_HOMES)
    if public is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
    )


def link_keras_and_tensorflow(app, env, node, contnode):
    """Links a Keras or TensorFlow name to its page on keras.io or tensorflow.org."""
    if node.get("refdomain") != "py":
        return None
    uri = external_links.url(node["reftarget"])
    if uri is None:
        return None
    reference = nodes.reference("", "", internal=False, refuri=uri, reftitle=node["reftarget"])
    reference.append(contnode)
    return reference
