"""The demo's two models on MNIST-1D: the CNN teacher and the hand-built MLP student.

`keras-distill demo` (`keras_distill._src.demo.job`) trains the teacher, distils
the hand-built student with its own recipe, and searches the student that fits
in the same flash and RAM; the benchmarks train the same teacher.
"""

from __future__ import annotations

import keras

STUDENT_HIDDEN = (64, 64)


def teacher_cnn(
    seed: int = 0, *, filters: int = 32, strides: tuple = (1, 2, 2), name: str = "teacher"
) -> keras.Model:
    """The demo's teacher: a 1-D CNN for MNIST-1D (13,706 parameters by default).

    Args:
        seed: Seed of the weight initialisation.
        filters: Filters of every convolution (kernel 5, ReLU).
        strides: One convolution per entry, with that stride.
        name: Model name.

    Returns:
        An uncompiled `keras.Sequential` returning logits.

    Example:
    >>> teacher_cnn().count_params(), teacher_cnn(filters=64, strides=(1, 2, 1, 2)).count_params()
    (13706, 68426)
    """
    keras.utils.set_random_seed(seed)
    conv = dict(kernel_size=5, padding="same", activation="relu")
    convolutions = [keras.layers.Conv1D(filters, strides=stride, **conv) for stride in strides]
    return keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Reshape((40, 1)),
            *convolutions,
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name=name,
    )


def student_mlp(hidden=STUDENT_HIDDEN, seed: int = 1, name: str = "student") -> keras.Model:
    """The demo's student: an MLP for MNIST-1D (7,434 parameters with 64-64).

    Args:
        hidden: Units of each hidden layer.
        seed: Seed of the weight initialisation.
        name: Model name.

    Returns:
        An uncompiled `keras.Sequential` returning logits.

    Example:
    >>> student_mlp().count_params()
    7434
    """
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((40,))]
    layers += [
        keras.layers.Dense(units, activation="relu", name=f"hidden_{i + 1}")
        for i, units in enumerate(hidden)
    ]
    return keras.Sequential(layers + [keras.layers.Dense(10, name="logits")], name=name)
