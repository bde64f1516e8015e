"""What a search may build: `Choices`, `SearchSpace` and the default spaces by input shape.

A space is a `build(choices) -> keras.Model` function that asks for each
decision with `choices.choose(name, options)` (as a KerasTuner hypermodel asks
its `hp`), plus the recipe's options (temperature, alpha, function matching,
quantization-aware training).
Options are listed smallest first: the candidate that takes every first option
is the smallest of the space, the one the budget is checked against first.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import keras
import numpy as np

RECIPE_OPTIONS = ("temperatures", "alphas", "function_matching", "quantization_aware")
FAMILIES_BY_RANK = {
    1: ("dense", "ds_conv1d", "conv1d"),
    2: ("ds_conv1d", "conv1d"),
    3: ("ds_cnn", "conv2d"),
}

# What a search tries first by input rank: a small CNN of each kind that does well on
# signals (MNIST-1D) and on images; the sampler takes over from there.
_CNN = {"blocks": 2, "filters": 16, "kernel": 5, "stride": 2, "pooling": "none"}
SUGGESTED_BY_RANK = {
    1: ({"family": "conv1d", **_CNN, "head": "flatten"},),
    2: ({"family": "conv1d", **_CNN, "head": "flatten"},),
    3: ({"family": "ds_cnn", **_CNN, "kernel": 3, "blocks": 3, "head": "average"},),
}


class Choices:
    """The decisions of one candidate, made by a picking rule as `build` asks for them.

    Args:
        pick: `pick(name, options) -> value`: an Optuna trial's
            `suggest_categorical`, the first option, or a stored value.

    Example:
    >>> choices = Choices.first()
    >>> choices.choose("width", (8, 16, 32)), choices.values
    (8, {'width': 8})
    """

    def __init__(self, pick: Callable):
        self.pick = pick
        self.values = {}

    @classmethod
    def first(cls) -> Choices:
        """Takes every first option: the smallest candidate of a space."""
        return cls(lambda name, options: options[0])

    @classmethod
    def stored(cls, values: dict) -> Choices:
        """Replays stored decisions (a candidate's `architecture` and `recipe`)."""
        return cls(lambda name, options: values[name])

    def choose(self, name: str, options) -> object:
        """One decision: a value out of `options` (scalars: numbers, strings, booleans).

        Raises:
            ValueError: If `options` is empty (the space has no candidate).
        """
        options = tuple(options)
        if not options:
            raise ValueError(
                f"The search space has no candidate: the choice {name!r} has no options."
            )
        value = self.pick(name, options)
        self.values[name] = value
        return value


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The candidates of a search: an architecture builder and the recipe's options.

    Attributes:
        build: `build(choices) -> keras.Model`: a classifier with logits out,
            whose decisions come from `choices.choose(name, options)`
            (options smallest first). Give its layers names (`name=`): the
            int8 model stores them, and Keras' automatic ones grow longer with
            the layers the process made before.
        temperatures: Distillation temperatures to try (a tuple, list or 1-D
            array, as are the other recipe options).
        alphas: Weights of the hard-label loss to try.
        function_matching: Whether to try function matching (the live teacher
            on the same augmented view, `Distiller(augment=)`), with
            `find_student(augment=)`; `(False,)` never does.
        name: A description that identifies the space in a stored search.
        suggested: Candidates to try first, before the sampler's own: dicts of
            choices (name -> value; those left out are sampled), e.g. an
            architecture known to do well, so that a short search does not
            miss it.
        quantization_aware: Whether to train candidates quantization-aware
            (`kd.quantization_aware`: exported fully int8 without
            representative data); `(False, True)` lets the sampler choose per
            candidate, `(True,)` always does. Off by default for a custom
            `build`, whose layers quantization-aware training may not model
            (such a candidate is infeasible, with the reason); on in
            `default_space`, whose layers it models.

    Example:
    >>> def build(choices):
    ...     units = choices.choose("units", (4, 8))
    ...     return keras.Sequential([keras.Input((3,)), keras.layers.Dense(units),
    ...                              keras.layers.Dense(2)])
    >>> space = SearchSpace(build, name="tiny")
    >>> space.build(Choices.first()).count_params()
    26
    """

    build: Callable
    temperatures: tuple = (1.0, 2.0, 4.0)
    alphas: tuple = (0.5, 0.2, 0.8)
    function_matching: tuple = (False, True)
    name: str = "custom"
    suggested: tuple = ()
    quantization_aware: tuple = (False,)

    def __post_init__(self):
        if not callable(self.build):
            raise ValueError(
                "`build` must be a function build(choices) -> keras.Model; "
                f"received {self.build!r}."
            )
        for field in RECIPE_OPTIONS:
            object.__setattr__(self, field, _options(field, getattr(self, field)))
        for field in ("function_matching", "quantization_aware"):
            if any(not isinstance(value, bool) for value in getattr(self, field)):
                raise ValueError(
                    f"`{field}` must hold booleans, e.g. (False, True); received "
                    f"{getattr(self, field)!r}."
                )
        object.__setattr__(self, "suggested", tuple(self.suggested))
        if any(not isinstance(choices, dict) for choices in self.suggested):
            raise ValueError(
                "`suggested` must hold dicts of choices (name -> value); received "
                f"{self.suggested!r}."
            )
        if any(not t > 0 for t in self.temperatures):
            raise ValueError(f"`temperatures` must be > 0; received {self.temperatures!r}.")
        if any(not 0 <= a <= 1 for a in self.alphas):
            raise ValueError(f"`alphas` must be in [0, 1]; received {self.alphas!r}.")

    def recipe_options(self) -> dict:
        """The recipe's options by field, as JSON holds them (what a stored search is of)."""
        return {field: list(getattr(self, field)) for field in RECIPE_OPTIONS}


def _options(field: str, values) -> tuple:
    """A recipe field's options as a tuple of Python values (Optuna stores them as JSON).

    A 1-D numpy array (e.g. `np.linspace(2, 8, 4)`) and numpy scalars are taken as their values.
    """
    if isinstance(values, np.ndarray) and values.ndim == 1:
        values = values.tolist()
    if not isinstance(values, (tuple, list)):
        raise ValueError(
            f"`{field}` must be a tuple, list or 1-D array of the options to try; received "
            f"{values!r}."
        )
    if not values:
        raise ValueError(f"The search space has no candidate: `{field}` is empty.")
    return tuple(value.item() if isinstance(value, np.generic) else value for value in values)


def build_candidate(space: SearchSpace, choices: Choices, num_classes: int) -> keras.Model:
    """The candidate's model, checked to output one logit per class."""
    model = space.build(choices)
    if not isinstance(model, keras.Model):
        raise ValueError(f"The space's build function returned {model!r}, not a keras.Model.")
    width = model.outputs[0].shape[-1]
    if width != num_classes:
        raise ValueError(
            f"The space's model {model.name!r} outputs {width} values, but the labels have "
            f"{num_classes} classes."
        )
    return model


def default_space(input_shape: tuple, num_classes: int) -> SearchSpace:
    """The default space for an input shape: dense, 1-D or 2-D convolutional students.

    Feature vectors `(features,)` get dense networks, and are also tried as
    signals (reshaped to `(steps, 1)`) with 1-D convolutions, plain and
    depthwise-separable; signals `(steps, channels)` get 1-D convolutions;
    images and spectrograms `(height, width, channels)` (or `(height, width)`)
    get 2-D convolutions and DS-CNN blocks (the MLPerf Tiny keyword-spotting
    family). Depths, widths, kernel sizes, strides, pooling and the head (global
    average pooling, or a flatten that keeps where a feature is) are searched.
    A small CNN of the input's kind is suggested to try first (`suggested`).

    Every candidate trains quantization-aware (`quantization_aware=(True,)`):
    its int8 model then keeps its float accuracy, and distillation's gain shows
    in the int8 model the board runs. `dataclasses.replace(space,
    quantization_aware=(False,))` trains in float and quantizes after training
    with representative data instead, `(False, True)` lets the sampler choose.

    Args:
        input_shape: One example's shape, without the batch axis.
        num_classes: Classes of the labels (the width of the logits).

    Returns:
        A `SearchSpace`.

    Raises:
        ValueError: For an input rank other than 1, 2 or 3, or fewer than 2 classes.

    Example:
    >>> space = default_space((40,), 10)
    >>> model = space.build(Choices.first())
    >>> model.output.shape, model.count_params(), space.quantization_aware
    ((None, 10), 418, (True,))
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) == 2 and input_shape[-1] > 16:  # (height, width) without channels
        input_shape = (*input_shape, 1)
    if len(input_shape) not in FAMILIES_BY_RANK:
        raise ValueError(
            f"No default search space for inputs of shape {input_shape}: give `space=` "
            "(a SearchSpace or a build(choices) function)."
        )
    if int(num_classes) < 2:
        raise ValueError(f"`num_classes` must be at least 2; received {num_classes!r}.")

    def build(choices: Choices) -> keras.Model:
        family = choices.choose("family", FAMILIES_BY_RANK[len(input_shape)])
        names = LayerNames()
        inputs = keras.Input(input_shape, name="input")
        x = BODIES[family](_as_signal(inputs, family, names), choices, names)
        outputs = keras.layers.Dense(int(num_classes), name=names("logits"))(x)
        return keras.Model(inputs, outputs, name=family)

    return SearchSpace(
        build,
        name=f"default{input_shape}->{int(num_classes)}",
        suggested=SUGGESTED_BY_RANK[len(input_shape)],
        quantization_aware=(True,),
    )


class LayerNames:
    """Names a model's layers by kind and place (`conv_1`, `conv_2`, ...).

    Keras' automatic names count over the whole process, and the int8
    flatbuffer stores the names: the same architecture built twice would
    convert to sizes that differ by their lengths, and a final training's
    flash could differ from its trial's.

    Example:
    >>> names = LayerNames()
    >>> names("conv"), names("conv"), names("relu")
    ('conv_1', 'conv_2', 'relu_1')
    """

    def __init__(self):
        self.counts = {}

    def __call__(self, kind: str) -> str:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return f"{kind}_{self.counts[kind]}"


def _as_signal(inputs, family: str, names: LayerNames):
    """A feature vector seen as a one-channel signal by the 1-D families."""
    if family.endswith("conv1d") and len(inputs.shape) == 2:
        return keras.layers.Reshape((inputs.shape[1], 1), name=names("reshape"))(inputs)
    return inputs


def _dense(x, choices: Choices, names: LayerNames):
    width = choices.choose("width", (8, 16, 32, 64, 128))
    for _ in range(choices.choose("depth", (1, 2, 3))):
        x = keras.layers.Dense(width, activation="relu", name=names("dense"))(x)
    return x


def _conv_settings(choices: Choices, kernels: tuple) -> tuple:
    return (
        choices.choose("blocks", (1, 2, 3)),
        choices.choose("filters", (4, 8, 16, 32)),
        choices.choose("kernel", kernels),
        choices.choose("stride", (2, 1)),
        choices.choose("pooling", ("max", "none")),
        choices.choose("head", ("average", "flatten")),
    )


# The layers of the convolutional families by rank: the convolution, the depthwise
# one, max pooling, global average pooling; and the kernel sizes searched.
CONVOLUTION_LAYERS_BY_RANK = {
    1: (
        keras.layers.Conv1D,
        keras.layers.DepthwiseConv1D,
        keras.layers.MaxPooling1D,
        keras.layers.GlobalAveragePooling1D,
    ),
    2: (
        keras.layers.Conv2D,
        keras.layers.DepthwiseConv2D,
        keras.layers.MaxPooling2D,
        keras.layers.GlobalAveragePooling2D,
    ),
}
KERNEL_SIZES_BY_RANK = {1: (3, 5, 7), 2: (3, 5)}


def _convolutional(x, choices: Choices, names: LayerNames, rank: int, separable: bool = False):
    """Convolution blocks; depthwise-separable after the first (DS-CNN) if `separable`."""
    convolution, depthwise, max_pooling, average = CONVOLUTION_LAYERS_BY_RANK[rank]
    blocks, filters, kernel, stride, pooling, head = _conv_settings(
        choices, KERNEL_SIZES_BY_RANK[rank]
    )
    for block in range(blocks):
        if separable and block > 0:  # depthwise, then a pointwise (1x1) convolution
            x = depthwise(kernel, strides=stride, padding="same", name=names("depthwise"))(x)
            x = convolution(filters, 1, activation="relu", name=names("pointwise"))(x)
        else:
            x = convolution(filters, kernel, strides=stride, padding="same", name=names("conv"))(x)
            x = keras.layers.ReLU(name=names("relu"))(x)
        if pooling == "max" and min(x.shape[1:-1]) >= 2:
            x = max_pooling(2, name=names("pool"))(x)
    return _head(x, head, average, names)


def _head(x, head: str, average, names: LayerNames):
    """Features for the classifier: averaged over positions, or every position kept."""
    if head == "average":
        return average(name=names("average"))(x)
    return keras.layers.Flatten(name=names("flatten"))(x)


BODIES = {
    "dense": _dense,
    "conv1d": functools.partial(_convolutional, rank=1),
    "ds_conv1d": functools.partial(_convolutional, rank=1, separable=True),
    "conv2d": functools.partial(_convolutional, rank=2),
    "ds_cnn": functools.partial(_convolutional, rank=2, separable=True),
}
