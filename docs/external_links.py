"""Links Keras and TensorFlow names in the reference to their own documentation, offline.

Neither keras.io nor tensorflow.org publishes a Sphinx inventory, so intersphinx cannot link to
them. Type hints and base classes name Keras and TensorFlow objects where they are defined
(`keras.src.models.model.Model`, `tensorflow.python.data.ops.dataset_ops.DatasetV2`); this
module finds each one's public name (`keras.Model`, `tf.data.Dataset`) by walking the public
namespaces, and its page: tensorflow.org's pages follow the public name, keras.io's follow
its sections.
"""

from __future__ import annotations

import functools
import importlib
import inspect

KERAS_NAMESPACES = [
    "keras",
    "keras.layers",
    "keras.losses",
    "keras.callbacks",
    "keras.optimizers",
    "keras.metrics",
    "keras.models",
    "keras.ops",
    "keras.utils",
    "keras.saving",
    "keras.initializers",
    "keras.regularizers",
    "keras.quantizers",
]
TF_NAMESPACES = ["tf", "tf.data", "tf.lite", "tf.distribute", "tf.io", "tf.train", "tf.types"]
KERAS_PAGES = {
    "keras.Model": "models/model/",
    "keras.Sequential": "models/sequential/",
    "keras.Layer": "layers/base_layer/",
    "keras.layers.Layer": "layers/base_layer/",
    "keras.Loss": "losses/",
    "keras.Optimizer": "optimizers/",
    "keras.Metric": "metrics/",
    "keras.models": "models/",
    "keras.layers": "layers/",
    "keras.losses": "losses/",
    "keras.callbacks": "callbacks/",
    "keras.optimizers": "optimizers/",
    "keras.metrics": "metrics/",
    "keras.ops": "ops/",
    "keras.utils": "utils/",
    "keras.saving": "models/model_saving_apis/",
    "keras.initializers": "layers/initializers/",
    "keras.regularizers": "layers/regularizers/",
    "keras.quantizers": "quantizers/",
}


@functools.cache
def public_names() -> dict[str, str]:
    """Where-defined names of Keras and TensorFlow classes and functions -> public names."""
    names: dict[str, str] = {}
    for namespace in KERAS_NAMESPACES + TF_NAMESPACES:
        module = importlib.import_module(namespace.replace("tf", "tensorflow", 1))
        for attribute in sorted(dir(module)):
            value = getattr(module, attribute, None)
            if attribute.startswith("_") or not (inspect.isclass(value) or callable(value)):
                continue
            defined = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
            names.setdefault(defined, f"{namespace}.{attribute}")
    return names


def url(target: str) -> str | None:
    """The documentation page of a Keras or TensorFlow name, public or where-defined.

    Args:
        target: A dotted name (`keras.src.models.model.Model`, `keras.layers.Dense`,
            `tf.data.Dataset`).

    Returns:
        A URL on keras.io or tensorflow.org, or None for a name of neither.

    Example:
    >>> url("keras.src.models.model.Model")
    'https://keras.io/api/models/model/'
    >>> url("tensorflow.python.data.ops.dataset_ops.DatasetV2")
    'https://www.tensorflow.org/api_docs/python/tf/data/Dataset'
    >>> url("numpy.ndarray") is None
    True
    """
    public = public_names().get(target, target)
    if public.startswith("tensorflow."):
        public = "tf." + public.removeprefix("tensorflow.")
    if public.startswith("tf."):
        return "https://www.tensorflow.org/api_docs/python/" + public.replace(".", "/")
    if not public.startswith("keras.") or public.startswith("keras.src."):
        return None
    for prefix in sorted(KERAS_PAGES, key=len, reverse=True):
        if public == prefix or public.startswith(prefix + "."):
            return "https://keras.io/api/" + KERAS_PAGES[prefix]
    return "https://keras.io/api/"
