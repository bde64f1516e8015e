"""Augmentations for function matching: one view of the batch for teacher and student.

`Distiller(..., augment=layer)` applies the layer to each training batch inside
the training step, before the teacher and the student see it (Beyer et al.,
2022, "Knowledge distillation: A good teacher is patient and consistent"): the
teacher then supplies the targets for exactly the inputs the student sees, so
augmentations that change what the label should be (mixup, cutmix) are fine.

Keras' own preprocessing layers fit image inputs (`RandomTranslation`,
`RandomFlip`, `RandomZoom`, `RandomContrast`, ... and `keras.layers.Pipeline`
or `keras.Sequential` to chain them), and `keras.layers.GaussianNoise` works
on any rank. Keras' `MixUp` and `CutMix` mix the labels too and expect images;
the layers here mix the inputs only, on inputs of any rank, as function
matching needs, and add a 1-D shift for signals and sequences. Every layer is
active only with `training=True`, draws its randomness from a Keras
`SeedGenerator` (so `keras.utils.set_random_seed` makes runs repeatable) and
is serializable.
"""

from __future__ import annotations

import keras
from keras import ops


class _BatchAugmentation(keras.layers.Layer):
    """Base of the layers: identity unless training; one seed generator."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        """Returns the augmented batch when training, the inputs otherwise."""
        if not training:
            return inputs
        return self._augment(ops.convert_to_tensor(inputs))

    def _augment(self, inputs):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        """The input shape: augmentations change values, not shapes."""
        return input_shape

    def get_config(self) -> dict:
        """Returns the layer's configuration."""
        return {**super().get_config(), "seed": self.seed}


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0; received {name}={value!r}.")
    return value


class _Mixing(_BatchAugmentation):
    """Base of the layers that mix each example with a partner from the batch.

    `mix(x, y)` mixes the inputs and, the same way, one-hot (or soft) labels:
    standard mixup or cutmix, as a scratch baseline trained on the same
    augmentation needs. Inside a `Distiller` only the inputs are mixed.
    """

    def __init__(self, concentration: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.concentration = _check_positive("concentration", concentration)

    def _augment(self, inputs):
        return self._mixed(inputs)[0]

    def mix(self, inputs, labels):
        """Mixes inputs and labels alike; returns `(mixed_inputs, mixed_labels)`.

        Args:
            inputs: A batch of inputs.
            labels: The batch's one-hot or soft labels, `(batch, classes)`.

        Returns:
            The mixed inputs, and the labels mixed with the share each
            partner has in the mixed input.
        """
        mixed, partners, own_share = self._mixed(ops.convert_to_tensor(inputs))
        labels = ops.cast(labels, "float32")
        share = ops.reshape(ops.cast(own_share, "float32"), (-1, 1))
        return mixed, share * labels + (1 - share) * ops.take(labels, partners, axis=0)

    def _partners(self, inputs):
        """Each example's partner: a random permutation of the batch."""
        return keras.random.shuffle(ops.arange(ops.shape(inputs)[0]), seed=self.seed_generator)

    def get_config(self) -> dict:
        """Returns the layer's configuration."""
        return {**super().get_config(), "concentration": self.concentration}


def _mixing_weights(batch, concentration: float, seed_generator):
    """`lam` per example from `Beta(c, c)`; uniform for c = 1, which XLA can compile."""
    if concentration == 1.0:
        return keras.random.uniform((batch,), seed=seed_generator)
    return keras.random.beta((batch,), concentration, concentration, seed=seed_generator)


def _per_example(values, rank: int):
    """`(batch,)` values shaped to broadcast against a batch of rank `rank`."""
    return ops.reshape(values, (-1,) + (1,) * (rank - 1))


@keras.saving.register_keras_serializable(package="keras_distill")
class InputMixup(_Mixing):
    """Mixes each input with another one of the batch: `lam * x + (1 - lam) * x'`.

    Only the inputs are mixed: the teacher, seeing the mixed input, supplies
    its target, so no label is mixed (or needed; train with `alpha=0`).
    `lam` is drawn per example from `Beta(concentration, concentration)`.

    Args:
        concentration: The Beta distribution's parameter, > 0 (1.0: uniform;
            small values mix less). Values other than 1.0 sample with a gamma
            kernel that XLA lacks: then do not compile with `jit_compile=True`.
        seed: Optional seed.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `concentration` is not > 0.

    Example:
    >>> import numpy as np
    >>> x = np.stack([np.zeros(4), np.ones(4)]).astype("float32")
    >>> mixed = np.asarray(InputMixup(seed=0)(x, training=True))
    >>> bool(((mixed >= 0) & (mixed <= 1)).all())
    True
    >>> np.asarray(InputMixup()(x)).tolist() == x.tolist()  # not training: unchanged
    True
    """

    def _mixed(self, inputs):
        lam = _mixing_weights(ops.shape(inputs)[0], self.concentration, self.seed_generator)
        partners = self._partners(inputs)
        weight = ops.cast(_per_example(lam, len(inputs.shape)), inputs.dtype)
        return weight * inputs + (1 - weight) * ops.take(inputs, partners, axis=0), partners, lam


@keras.saving.register_keras_serializable(package="keras_distill")
class InputCutMix(_Mixing):
    """Pastes a random box of another input of the batch into each input.

    The box spans a fraction `sqrt(1 - lam)` of each spatial axis (`lam` from
    `Beta(concentration, concentration)`), so it covers about `1 - lam` of the
    input: a segment for `(batch, features)` or `(batch, time, channels)`
    inputs, a rectangle for `(batch, height, width, channels)` images. Only
    the inputs are mixed; the teacher supplies the targets.

    Args:
        concentration: The Beta distribution's parameter, > 0 (1.0, uniform,
            is the one that compiles with `jit_compile=True`).
        seed: Optional seed.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `concentration` is not > 0.

    Example:
    >>> import numpy as np
    >>> x = np.stack([np.zeros(10), np.ones(10)]).astype("float32")
    >>> cut = np.asarray(InputCutMix(seed=1)(x, training=True))
    >>> sorted(set(cut.ravel().tolist())) in ([0.0], [1.0], [0.0, 1.0])
    True
    """

    def _mixed(self, inputs):
        rank = len(inputs.shape)
        spatial = [1] if rank <= 3 else list(range(1, rank - 1))
        batch = ops.shape(inputs)[0]
        side = ops.sqrt(1.0 - _mixing_weights(batch, self.concentration, self.seed_generator))
        inside, area = None, 1.0
        for axis in spatial:
            size = ops.shape(inputs)[axis]
            length = ops.cast(ops.round(side * ops.cast(size, "float32")), "int32")
            start = keras.random.randint((batch,), 0, size + 1, seed=self.seed_generator)
            start = ops.minimum(start, size - length)
            positions = ops.reshape(ops.arange(size), [1 if a != axis else -1 for a in range(rank)])
            low = _per_example(start, rank)
            box = (positions >= low) & (positions < low + _per_example(length, rank))
            inside = box if inside is None else inside & box
            area = area * ops.cast(length, "float32") / ops.cast(size, "float32")
        partners = self._partners(inputs)
        mixed = ops.where(inside, ops.take(inputs, partners, axis=0), inputs)
        return mixed, partners, 1.0 - area


@keras.saving.register_keras_serializable(package="keras_distill")
class RandomShift1D(_BatchAugmentation):
    """Shifts each input along axis 1 by a random whole number of steps.

    For signals and sequences, `(batch, time)` or `(batch, time, channels)`.
    The shift is drawn per example, uniformly in `[-max_shift, max_shift]`.

    Args:
        max_shift: The largest shift, in steps (>= 1).
        fill: `"wrap"` (circular, nothing lost), `"edge"` (repeat the end
            values) or `"zeros"`.
        seed: Optional seed.
        **kwargs: Passed to `keras.layers.Layer`.

    Raises:
        ValueError: If `max_shift` is not a positive integer or `fill` is unknown.

    Example:
    >>> import numpy as np
    >>> x = np.arange(6, dtype="float32")[None].repeat(3, 0)
    >>> shifted = np.asarray(RandomShift1D(2, seed=0)(x, training=True))
    >>> all(sorted(row.tolist()) == x[0].tolist() for row in shifted)  # "wrap" keeps values
    True
    """

    FILLS = ("wrap", "edge", "zeros")

    def __init__(self, max_shift: int, fill: str = "wrap", seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 1:
            raise ValueError(f"`max_shift` must be an integer >= 1; received {max_shift!r}.")
        if fill not in self.FILLS:
            raise ValueError(f"`fill` must be one of {self.FILLS}; received {fill!r}.")
        self.max_shift, self.fill = max_shift, fill

    def _augment(self, inputs):
        rank = len(inputs.shape)
        if rank not in (2, 3):
            raise ValueError(
                "RandomShift1D takes inputs (batch, time) or (batch, time, channels); received "
                f"shape {tuple(inputs.shape)}. Use keras.layers.RandomTranslation for images."
            )
        batch, size = ops.shape(inputs)[0], ops.shape(inputs)[1]
        shift = keras.random.randint(
            (batch, 1), -self.max_shift, self.max_shift + 1, seed=self.seed_generator
        )
        source = ops.arange(size)[None, :] - shift
        valid = (source >= 0) & (source < size)
        if self.fill == "wrap":
            source = ops.mod(source, size)
        else:
            source = ops.clip(source, 0, size - 1)
        if rank == 3:
            source, valid = source[..., None], valid[..., None]
        shifted = ops.take_along_axis(inputs, ops.broadcast_to(source, ops.shape(inputs)), axis=1)
        if self.fill == "zeros":
            shifted = ops.where(valid, shifted, ops.zeros_like(shifted))
        return shifted

    def get_config(self) -> dict:
        """Returns the layer's configuration."""
        return {**super().get_config(), "max_shift": self.max_shift, "fill": self.fill}


def with_mixed_labels(augmentation, inputs, labels):
    """Applies an augmentation in training mode, mixing one-hot labels where it mixes inputs.

    For training *without* a teacher on the same augmentation (the scratch
    baseline of function matching): `InputMixup` and `InputCutMix` layers mix
    the labels exactly as they mix the inputs (standard mixup and cutmix);
    every other layer only transforms the inputs.

    Args:
        augmentation: A layer, or a `keras.Sequential` of layers.
        inputs: A batch of inputs.
        labels: One-hot (or soft) labels, `(batch, classes)`.

    Returns:
        `(augmented_inputs, labels)`.

    Example:
    >>> import numpy as np
    >>> x, y = np.eye(4, dtype="float32"), np.eye(4, dtype="float32")
    >>> mixed_x, mixed_y = with_mixed_labels(InputMixup(seed=0), x, y)
    >>> bool(np.allclose(np.asarray(mixed_x), np.asarray(mixed_y)))  # mixed alike
    True
    """
    layers = augmentation.layers if isinstance(augmentation, keras.Sequential) else [augmentation]
    for layer in layers:
        if isinstance(layer, _Mixing):
            inputs, labels = layer.mix(inputs, labels)
        else:
            inputs = layer(inputs, training=True)
    return inputs, labels


KINDS = ("auto", "features", "signal", "image")


def default_augmentation(
    input_shape: tuple, kind: str = "auto", seed: int | None = None, mixup: bool = False
) -> keras.layers.Layer:
    """The function-matching augmentation the recipes use for inputs of a kind.

    - `"features"` (flat vectors of any meaning): mild Gaussian noise; nothing
      that assumes an order of the features.
    - `"signal"` (1-D signals and sequences, `(time,)` or `(time, channels)`):
      a random shift of up to a tenth of the length, then mild noise.
    - `"image"` (`(height, width, channels)`): random translation of up to a
      tenth.
    - `"auto"`: by rank: 1 features, 2 signal, 3 image.

    Input mixup is off by default: in the project's benchmark
    (`benchmarks/quality_benchmark.py`, see the README) function matching
    with it was worse than without it on all four students.

    Args:
        input_shape: One example's shape, without the batch axis.
        kind: One of `KINDS`.
        seed: Optional seed.
        mixup: Append `InputMixup`.

    Returns:
        A `keras.Sequential` of augmentation layers.

    Raises:
        ValueError: If `kind` is unknown or does not fit the rank.

    Example:
    >>> [type(layer).__name__ for layer in default_augmentation((40,), "signal").layers]
    ['RandomShift1D', 'GaussianNoise']
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}; received {kind!r}.")
    rank = len(input_shape)
    if kind == "auto":
        kind = {1: "features", 2: "signal", 3: "image"}.get(rank, "features")
    if kind == "image" and rank != 3 or kind == "signal" and rank not in (1, 2):
        raise ValueError(
            f"A {kind!r} augmentation does not fit inputs of shape {tuple(input_shape)}; "
            "signals are (time,) or (time, channels), images (height, width, channels)."
        )
    noise = keras.layers.GaussianNoise(0.05, seed=seed)
    layers = {
        "features": [noise],
        "signal": [RandomShift1D(max(1, int(input_shape[0]) // 10), seed=seed), noise],
        "image": [keras.layers.RandomTranslation(0.1, 0.1, seed=seed)],
    }[kind]
    if mixup:
        layers.append(InputMixup(seed=seed))
    return keras.Sequential(layers, name="function_matching")
