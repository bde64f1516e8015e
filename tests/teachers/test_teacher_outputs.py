"""One reading of what a teacher returns: its graph, then its first batch, then one wording."""

import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill import Distiller
from keras_distill._src.teachers import outputs
from keras_distill._src.teachers.outputs import TeacherOutputError
from keras_distill._src.utils.model_inspection import output_kinds_in_graph

SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CLASSES = 3


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, CLASSES, n)


def student(classes=CLASSES, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(classes)], name="student")


def functional(head):
    """A Functional teacher: Dense logits, then `head(logits)` as its output."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    return keras.Model(inputs, head(keras.layers.Dense(CLASSES)(inputs)), name="functional")


def sequential(*tail):
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(CLASSES), *tail], name="sequential"
    )


TEACHERS = {
    "Lambda(tf.nn.softmax)": (
        lambda: sequential(keras.layers.Lambda(lambda z: tf.nn.softmax(z))),
        "probabilities",
    ),
    "Lambda(keras.ops.softmax)": (
        lambda: sequential(keras.layers.Lambda(lambda z: keras.ops.softmax(z))),
        "probabilities",
    ),
    "Activation(lambda z: tf.nn.softmax(z))": (
        lambda: sequential(keras.layers.Activation(lambda z: tf.nn.softmax(z))),
        "probabilities",
    ),
    "Functional keras.ops.softmax": (lambda: functional(keras.ops.softmax), "probabilities"),
    "Functional keras.ops.log_softmax": (
        lambda: functional(keras.ops.log_softmax),
        "log_probabilities",
    ),
    "Lambda(log(softmax))": (
        lambda: sequential(keras.layers.Lambda(lambda z: tf.math.log(tf.nn.softmax(z)))),
        "log_probabilities",
    ),
    "a softmax teacher nested in a Functional model": (
        lambda: functional(sequential(keras.layers.Softmax()).layers[-1]),
        "probabilities",
    ),
    "Dense logits": (lambda: sequential(), "logits"),
    "Dropout after logits": (lambda: sequential(keras.layers.Dropout(0.5)), "logits"),
}


@pytest.mark.parametrize("written_as", sorted(TEACHERS))
def test_the_graph_shows_what_the_teacher_returns(written_as):
    build, kind = TEACHERS[written_as]
    assert output_kinds_in_graph(build()) == [kind]


def caught(fn):
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in found if "copy keyword" not in str(w.message)]


@pytest.mark.parametrize("written_as", ["Lambda(tf.nn.softmax)", "Functional keras.ops.softmax"])
def test_a_softmax_written_as_code_is_distilled_as_probabilities(written_as):
    # Read as logits, the loss would compare the student with softmax(probabilities).
    x, y = data()
    teacher = TEACHERS[written_as][0]()
    distiller = Distiller(teacher, student(), alpha=0.0)
    assert distiller.teacher_outputs_are_probabilities
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    history, messages = caught(lambda: distiller.fit(x, y, batch_size=32, epochs=1, verbose=0))
    assert not any("look like probabilities" in m for m in messages)
    target = np.asarray(teacher(x))
    student_probabilities = np.asarray(keras.ops.softmax(distiller.student(x)))
    expected = np.mean(np.sum(target * np.log(target / student_probabilities), axis=-1))
    assert history.history["distillation_loss"][0] == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("written_as", ["Lambda(tf.nn.softmax)", "Functional keras.ops.softmax"])
def test_label_with_teacher_stores_a_softmax_written_as_code_as_probabilities(written_as, tmp_path):
    x, y = data()
    teacher = TEACHERS[written_as][0]()
    manifest = kd.label_with_teacher(teacher, (x, y), tmp_path, verbose=0)
    assert manifest["settings"]["output"] == "probabilities"
    _, targets = next(iter(kd.load_teacher_labels(tmp_path, batch_size=32)))
    np.testing.assert_allclose(
        np.asarray(targets["teacher_logits"]), np.log(np.asarray(teacher(x))), atol=1e-5
    )


def test_a_callable_returning_probabilities_is_named_when_stored_as_logits(tmp_path):
    x, y = data()

    def probabilities(batch):
        return np.asarray(keras.ops.softmax(batch[:, :CLASSES]))

    _, messages = caught(lambda: kd.label_with_teacher(probabilities, (x, y), tmp_path, verbose=0))
    assert any(
        "'probabilities'" in m and "look like probabilities" in m and "output='probabilities'" in m
        for m in messages
    )


# -- the first batch's values ------------------------------------------------------------


def test_values_are_read_row_by_row():
    logits = np.random.default_rng(0).normal(size=(4, 5))
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert outputs.values_kind(logits) == "logits"
    assert outputs.values_kind(probabilities) == "probabilities"
    assert outputs.values_kind(np.log(probabilities)) == "log_probabilities"
    assert outputs.values_kind(probabilities.astype("float16")) == "probabilities"
    assert outputs.values_kind(np.ones((4, 1))) == "logits"  # one value per row says nothing


def test_non_finite_values_name_the_teacher_and_the_examples():
    values = np.zeros((20, 3), "float32")
    values[[4, 7], 1] = np.nan
    with pytest.raises(
        TeacherOutputError,
        match=r"teacher 'broken' produced non-finite outputs: NaN or infinite values for "
        r"examples \[104, 107\]",
    ):
        outputs.check_values(values, "broken", False, "teacher_output", start=100)


def test_values_read_as_probabilities_that_are_not_are_refused():
    with pytest.raises(TeacherOutputError, match=r"read as probabilities.*teacher_output='logits'"):
        outputs.check_values(np.array([[2.0, -1.0]]), "t", True, "teacher_output")


def test_a_distiller_told_its_teacher_gives_probabilities_refuses_logits():
    x, y = data()
    distiller = Distiller(sequential(), student(), teacher_output="probabilities")
    distiller.compile(keras.optimizers.SGD(0.1), SCE)
    before = distiller.student.get_weights()[0].copy()
    with pytest.raises(TeacherOutputError, match=r"'sequential'.*read as probabilities"):
        distiller.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(distiller.student.get_weights()[0], before)


def test_top_k_values_must_be_log_probabilities():
    log_probabilities = np.log(np.array([[[0.5, 0.3]]]))
    np.testing.assert_allclose(
        outputs.checked_log_probabilities(log_probabilities, "t", top_k=True),
        log_probabilities,
        atol=1e-7,
    )
    with pytest.raises(
        TeacherOutputError, match=r"top-k values of the teacher .t. are not log-probabilities"
    ):
        outputs.checked_log_probabilities(np.array([[[0.5, 0.3]]]), "t", top_k=True)
    with pytest.raises(TeacherOutputError, match=r"sum to up to 1\.5"):
        outputs.checked_log_probabilities(np.log(np.array([[[0.9, 0.6]]])), "t", top_k=True)


def test_the_in_graph_check_stops_a_step_with_the_same_wording():
    structure = {"logits": tf.constant([[1.0, 2.0]]), "ids": tf.constant([3])}
    finite = outputs.finite_in_graph(structure, "t")
    np.testing.assert_array_equal(np.asarray(finite["logits"]), [[1.0, 2.0]])
    np.testing.assert_array_equal(np.asarray(finite["ids"]), [3])  # not floats: passed on
    step = tf.function(lambda v: outputs.finite_in_graph(v, "t"))
    for bad in (np.nan, np.inf):
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=re.escape(outputs.non_finite_message("t", "in this step")),
        ):
            step(tf.constant([[bad, 1.0]]))


# -- counts against the student, before the first step ----------------------------------


def test_a_stored_top_k_teacher_with_fewer_classes_than_the_student_is_refused(tmp_path):
    x, y = data()
    kd.label_with_teacher(lambda b: 2.0 * b[:, :CLASSES], (x, y), tmp_path, top_k=2, verbose=0)
    distiller = Distiller(None, student(classes=CLASSES + 2))
    distiller.compile(keras.optimizers.SGD(0.1), SCE)
    before = distiller.student.get_weights()[0].copy()
    with pytest.raises(
        TeacherOutputError, match=r"teacher with 3 classes, but the student has 5 classes"
    ):
        distiller.fit(kd.load_teacher_labels(tmp_path, batch_size=16), epochs=1, verbose=0)
    np.testing.assert_array_equal(distiller.student.get_weights()[0], before)


def test_stored_logits_of_other_classes_are_refused_before_the_first_step():
    x, y = data()
    targets = {"labels": y, "teacher_logits": np.zeros((32, CLASSES + 1), "float32")}
    distiller = Distiller(None, student())
    distiller.compile(keras.optimizers.SGD(0.1), SCE)
    with pytest.raises(TeacherOutputError, match=r"teacher with 4 classes, but the student has 3"):
        distiller.fit(x, targets, epochs=1, verbose=0)
