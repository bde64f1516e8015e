"""`Distiller.fit`/`evaluate` keep `keras.Model.fit`'s contract: a differential test against Keras.

A distiller that uses the labels only (`alpha=1`: the distillation term has weight 0) must train
its student to the weights that `student.fit` reaches with the same seed and batch order, for
every way Keras takes data, with a cached, a live and a stored teacher; its compiled metrics and
loss must be Keras' own. What it cannot take is refused with a message that names the argument.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SCE

from keras_distill import Distiller

EXAMPLES, FEATURES, CLASSES, BATCH = 48, 5, 3, 16
FIT_SEED = 7
TEACHERS = ("cached", "live", "stored")


def arrays():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(EXAMPLES, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, EXAMPLES)
    weights = rng.uniform(0.2, 2.0, EXAMPLES).astype("float32")
    return x, y, weights


def model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )


TEACHER = model(2)
TEACHER_LOGITS = TEACHER.predict(arrays()[0], verbose=0)


def compiled(network):
    network.compile(keras.optimizers.Adam(0.05), SCE, metrics=["accuracy"])
    return network


def distiller(teacher_kind):
    """A distiller of a fresh student that learns from the labels only (alpha=1)."""
    if teacher_kind == "stored":
        return compiled(Distiller(None, model(1), alpha=1.0))
    cache = "auto" if teacher_kind == "cached" else False
    return compiled(Distiller(TEACHER, model(1), alpha=1.0, cache_teacher_outputs=cache))


def targets(y, rows, teacher_kind):
    """The distiller's targets: plain labels, or labels beside the stored teacher outputs."""
    if teacher_kind != "stored":
        return y
    return {"labels": y, "teacher_logits": TEACHER_LOGITS[rows]}


def fit_arguments(way, teacher_kind):
    """(`student.fit`'s keyword arguments, the distiller's) for one way of giving data."""
    x, y, w = arrays()
    rows = np.arange(EXAMPLES)
    t = targets(y, rows, teacher_kind)
    plain = dict(x=x, y=y, batch_size=BATCH, epochs=2)
    ours = dict(x=x, y=t, batch_size=BATCH, epochs=2)
    if way == "arrays":
        return plain, ours
    if way == "sample_weight":
        return dict(plain, sample_weight=w), dict(ours, sample_weight=w)
    if way == "class_weight":
        weights = {0: 0.5, 1: 2.0, 2: 1.0}
        return dict(plain, class_weight=weights), dict(ours, class_weight=weights)
    if way == "validation_data":
        return dict(plain, validation_data=(x, y)), dict(ours, validation_data=(x, t))
    if way == "validation_data_weighted":
        return dict(plain, validation_data=(x, y, w)), dict(ours, validation_data=(x, t, w))
    if way == "validation_split":
        both = dict(validation_split=0.25, sample_weight=w)
        return dict(plain, **both), dict(ours, **both)
    if way == "steps_per_epoch":
        return dict(plain, steps_per_epoch=2), dict(ours, steps_per_epoch=2)
    if way == "initial_epoch":
        return dict(plain, initial_epoch=1, epochs=3), dict(ours, initial_epoch=1, epochs=3)
    if way == "no_shuffle":
        return dict(plain, shuffle=False), dict(ours, shuffle=False)
    raise AssertionError(way)


def dataset_arguments(way, teacher_kind):
    """The same for inputs that are not arrays: tf.data, a generator, a PyDataset."""
    x, y, w = arrays()
    t = targets(y, np.arange(EXAMPLES), teacher_kind)

    def batches(labels, weighted=False):
        for start in range(0, EXAMPLES, BATCH):
            rows = slice(start, start + BATCH)
            head = (x[rows], keras.tree.map_structure(lambda v, rows=rows: v[rows], labels))
            yield (*head, w[rows]) if weighted else head

    if way == "tf.data":
        make = lambda labels: tf.data.Dataset.from_tensor_slices((x, labels)).batch(BATCH)  # noqa: E731
    elif way == "tf.data_weighted":
        make = lambda labels: tf.data.Dataset.from_tensor_slices((x, labels, w)).batch(BATCH)  # noqa: E731
    elif way == "generator":
        steps = EXAMPLES // BATCH

        def make(labels):
            def forever():
                while True:
                    yield from batches(labels)

            return forever()

        return (
            dict(x=make(y), epochs=2, steps_per_epoch=steps),
            dict(x=make(t), epochs=2, steps_per_epoch=steps),
        )
    elif way == "PyDataset":
        make = lambda labels: Batches(list(batches(labels, weighted=True)))  # noqa: E731
    else:
        raise AssertionError(way)
    return dict(x=make(y), epochs=2), dict(x=make(t), epochs=2)


class Batches(keras.utils.PyDataset):
    """A `PyDataset` of fixed batches."""

    def __init__(self, items):
        super().__init__()
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def seeded_fit(network, arguments):
    keras.utils.set_random_seed(FIT_SEED)
    return network.fit(verbose=0, **arguments).history


def assert_trains_like_keras(plain_arguments, our_arguments, teacher_kind):
    """`student.fit` and the distiller's `fit` reach the same weights, losses and metrics."""
    student = compiled(model(1))
    ours = distiller(teacher_kind)
    plain_history = seeded_fit(student, plain_arguments)
    our_history = seeded_fit(ours, our_arguments)
    for expected, got in zip(student.get_weights(), ours.student.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    for key, values in plain_history.items():
        np.testing.assert_allclose(our_history[key], values, rtol=1e-4, atol=1e-5, err_msg=key)


ARRAY_WAYS = (
    "arrays",
    "sample_weight",
    "class_weight",
    "validation_data",
    "validation_data_weighted",
    "validation_split",
    "steps_per_epoch",
    "initial_epoch",
    "no_shuffle",
)


@pytest.mark.parametrize("teacher_kind", TEACHERS)
@pytest.mark.parametrize("way", ARRAY_WAYS)
def test_arrays_train_the_student_as_keras_fit_does(way, teacher_kind):
    assert_trains_like_keras(*fit_arguments(way, teacher_kind), teacher_kind)


@pytest.mark.parametrize("teacher_kind", TEACHERS)
@pytest.mark.parametrize("way", ("tf.data", "tf.data_weighted", "generator", "PyDataset"))
def test_datasets_train_the_student_as_keras_fit_does(way, teacher_kind):
    assert_trains_like_keras(*dataset_arguments(way, teacher_kind), teacher_kind)


@pytest.mark.parametrize("teacher_kind", TEACHERS)
def test_evaluate_gives_keras_loss_and_metrics(teacher_kind):
    x, y, w = arrays()
    student = compiled(model(1))
    ours = distiller(teacher_kind)
    t = targets(y, np.arange(EXAMPLES), teacher_kind)
    for weights in (None, w):
        expected = student.evaluate(x, y, sample_weight=weights, return_dict=True, verbose=0)
        got = ours.evaluate(x, t, sample_weight=weights, return_dict=True, verbose=0)
        for key in ("loss", "accuracy"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", (0.0, 0.5))
def test_without_labels_compiled_metrics_are_left_out_with_a_note(alpha):
    x, _, _ = arrays()
    ours = compiled(Distiller(TEACHER, model(1), alpha=alpha))
    with pytest.warns(UserWarning, match="accuracy"):
        history = ours.fit(x, epochs=1, batch_size=BATCH, verbose=0).history
    assert "accuracy" not in history and np.isfinite(history["loss"][-1])
    assert "accuracy" not in ours.evaluate(x, return_dict=True, verbose=0)


def test_an_augment_without_a_training_argument_is_called_with_the_batch_alone():
    x, y, _ = arrays()
    seen = []

    def scale(batch):
        seen.append(batch.shape)
        return batch * 1.0

    ours = compiled(Distiller(TEACHER, model(1), augment=scale))
    ours.fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
    assert seen and tuple(seen[-1])[1:] == (FEATURES,)


def test_numpy_randomness_is_accepted_when_the_step_runs_eagerly():
    x, y, _ = arrays()

    def noise(batch, training):
        return batch + np.random.normal(size=batch.shape).astype("float32")

    ours = Distiller(TEACHER, model(1), augment=noise)
    ours.compile(keras.optimizers.Adam(0.05), SCE, run_eagerly=True)
    history = ours.fit(x, y, epochs=1, batch_size=BATCH, verbose=0).history
    assert np.isfinite(history["loss"][-1])


@pytest.mark.parametrize(
    "labels, message",
    [
        (keras.utils.to_categorical(arrays()[1], CLASSES), "one-hot"),
        (np.array(["cat", "dog", "eel"])[arrays()[1]], "strings"),
        (arrays()[1] + CLASSES, "out of range"),
        (arrays()[1] - 1, "out of range"),
    ],
    ids=["one-hot", "strings", "too-large", "negative"],
)
@pytest.mark.parametrize("teacher_kind", TEACHERS)
def test_labels_the_loss_cannot_read_are_named_at_fit_start(labels, message, teacher_kind):
    x = arrays()[0]
    ours = distiller(teacher_kind)
    with pytest.raises(ValueError, match=message):
        ours.fit(x, targets(labels, np.arange(EXAMPLES), teacher_kind), epochs=1, verbose=0)
