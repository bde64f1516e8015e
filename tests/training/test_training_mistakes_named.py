"""Mistakes made with the Distiller are named: each gets a clear error or warning, not silence."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_distill import Distiller, schedules
from keras_distill._src.training import fit_checks
from keras_distill._src.training.callbacks import TemperatureScheduler

SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(inputs=(4,), classes=3, seed=0, activation=None, name=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(inputs),
            keras.layers.Flatten(),
            keras.layers.Dense(classes, activation=activation),
        ],
        name=name,
    )


def data(n=16, shape=(4,), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, 3, n)


def compiled(distiller):
    distiller.compile(keras.optimizers.SGD(0.1), SCE)
    return distiller


def caught(fn):
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in found]


# -- item 4: no labels ------------------------------------------------------------------


@pytest.mark.parametrize("as_dataset", [False, True])
def test_alpha_one_without_labels_is_refused_at_fit_start(as_dataset):
    x, _ = data()
    distiller = compiled(Distiller(mlp(seed=1), mlp(), alpha=1.0))
    inputs = tf.data.Dataset.from_tensor_slices((x,)).batch(8) if as_dataset else x
    with pytest.raises(ValueError, match=r"no labels.*alpha=1\.0.*nothing would train"):
        distiller.fit(inputs, epochs=1, verbose=0)


def test_training_without_labels_says_so_and_logs_no_student_loss():
    x, _ = data()
    distiller = compiled(Distiller(mlp(seed=1), mlp(), alpha=0.5))
    before = distiller.student.get_weights()[0].copy()
    history, messages = caught(lambda: distiller.fit(x, epochs=1, verbose=0))
    assert any("learns from the teacher alone" in m for m in messages)
    assert "student_loss" not in history.history
    assert history.history["distillation_loss"][0] > 0
    assert not np.allclose(distiller.student.get_weights()[0], before)


# -- item 5: softmax teachers -------------------------------------------------------------


SOFTMAX_TEACHERS = {
    "Activation(tf.nn.softmax)": lambda: [
        keras.layers.Dense(3),
        keras.layers.Activation(tf.nn.softmax),
    ],
    "Dense(activation=tf.nn.softmax)": lambda: [keras.layers.Dense(3, activation=tf.nn.softmax)],
}


@pytest.mark.parametrize("written_as", sorted(SOFTMAX_TEACHERS))
def test_softmax_written_with_tensorflow_functions_is_detected(written_as):
    teacher = keras.Sequential([keras.Input((4,)), *SOFTMAX_TEACHERS[written_as]()])
    distiller = Distiller(teacher, mlp())
    assert distiller.teacher_outputs_are_probabilities


@pytest.mark.parametrize("feed", ["cached arrays", "live arrays", "augmented arrays", "dataset"])
def test_a_softmax_written_out_gets_a_warning_naming_teacher_output(feed):
    x, y = data()
    teacher = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3),
            # exp / sum: no softmax op for the graph to show, only the values say it
            keras.layers.Lambda(
                lambda z: keras.ops.exp(z) / keras.ops.sum(keras.ops.exp(z), -1, True)
            ),
        ]
    )
    options = {
        "live arrays": {"cache_teacher_outputs": False},
        "augmented arrays": {"augment": lambda batch, training: batch * 1.0},
    }.get(feed, {})
    distiller = compiled(Distiller(teacher, mlp(), **options))
    as_dataset = feed == "dataset"
    inputs = tf.data.Dataset.from_tensor_slices((x, y)).batch(8) if as_dataset else x
    _, messages = caught(
        lambda: distiller.fit(inputs, None if as_dataset else y, epochs=1, verbose=0)
    )
    assert any(
        "look like probabilities" in m and "teacher_output='probabilities'" in m for m in messages
    )


# -- item 7: teachers with other inputs -------------------------------------------------------


def test_a_teacher_with_other_inputs_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"\(8, 8, 3\).*\(8, 8, 1\).*teacher_inputs="):
        Distiller(mlp((8, 8, 3), seed=1), mlp((8, 8, 1)))


@pytest.mark.parametrize("cache", ["auto", False])
def test_teacher_inputs_adapt_the_students_batch(cache):
    x, y = data(shape=(8, 8, 1))
    teacher = mlp((8, 8, 3), seed=1)
    distiller = compiled(
        Distiller(
            teacher,
            mlp((8, 8, 1)),
            teacher_inputs=lambda batch: keras.ops.repeat(batch, 3, axis=-1),
            cache_teacher_outputs=cache,
            alpha=0.0,
        )
    )
    distiller.optimizer.learning_rate.assign(0.0)  # measure the loss without moving
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    teacher_logits = keras.ops.convert_to_numpy(teacher(np.repeat(x, 3, axis=-1)))
    student_logits = keras.ops.convert_to_numpy(distiller.student(x))
    expected = keras.ops.convert_to_numpy(
        keras.losses.kl_divergence(
            keras.ops.softmax(teacher_logits), keras.ops.softmax(student_logits)
        )
    ).mean()
    assert history.history["distillation_loss"][0] == pytest.approx(
        float(expected), rel=1e-4, abs=1e-6
    )


# -- item 8: non-finite teacher outputs --------------------------------------------------------


def nan_teacher():
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda z: z * np.float32("nan"))(keras.layers.Dense(3)(inputs))
    return keras.Model(inputs, outputs, name="broken_teacher")


def test_a_nan_teacher_is_named_before_training_from_cached_outputs():
    x, y = data()
    distiller = compiled(Distiller(nan_teacher(), mlp()))
    with pytest.raises(ValueError, match=r"teacher 'broken_teacher' produced non-finite outputs"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_a_nan_live_teacher_is_named_before_the_first_step():
    x, y = data()
    distiller = compiled(Distiller(nan_teacher(), mlp(), cache_teacher_outputs=False))
    with pytest.raises(ValueError, match=r"teacher 'broken_teacher' produced non-finite outputs"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_a_live_teacher_that_turns_nan_later_is_named_at_that_step():
    x, y = data(n=64)
    x[-8:] = np.nan  # the first 32 examples (the probe) are finite; the last batch is not
    distiller = compiled(Distiller(mlp(seed=1), mlp(), cache_teacher_outputs=False))
    with pytest.raises(Exception, match=r"teacher \W*\w+\W* produced non-finite outputs"):
        distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)


# -- item 9: empty arrays ---------------------------------------------------------------------


def test_fit_on_empty_arrays_behaves_as_plain_keras():
    distiller = compiled(Distiller(mlp(seed=1), mlp()))
    history = distiller.fit(np.zeros((0, 4), "float32"), np.zeros((0,), "int64"), verbose=0)
    assert history.history == {}


# -- item 10: shared layers ---------------------------------------------------------------------


def test_a_student_sharing_layers_with_the_teacher_is_warned_about():
    shared = keras.layers.Dense(3, name="shared_dense")
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), shared])
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), shared])
    _, messages = caught(lambda: Distiller(teacher, student))
    assert any("shares layers" in m and "shared_dense" in m for m in messages)


# -- item 13: schedules ----------------------------------------------------------------------------


def test_a_schedule_returning_none_names_itself_and_the_epoch():
    def forgetful(step):
        return None if step == 1 else 2.0

    x, y = data()
    distiller = compiled(Distiller(mlp(seed=1), mlp()))
    with pytest.raises(
        TypeError, match=r"forgetful.*returned None at epoch 1.*must return a number"
    ):
        distiller.fit(x, y, epochs=2, verbose=0, callbacks=[TemperatureScheduler(forgetful)])


def test_a_learning_rate_style_schedule_is_refused_at_construction():
    with pytest.raises(
        TypeError, match=r"takes 2 arguments.*LearningRateScheduler.*schedule\(step\)"
    ):
        TemperatureScheduler(lambda epoch, value: value * 0.9)


def test_schedule_values_are_checked_at_construction():
    with pytest.raises(ValueError, match=r"Cosine\(start=4.0, end=-1.0, steps=10\) reaches -1.0"):
        TemperatureScheduler(schedules.Cosine(4.0, -1.0, steps=10))
    with pytest.raises(ValueError, match=r"alpha_schedule.*reaches 1.5"):
        TemperatureScheduler(2.0, alpha_schedule=schedules.Linear(0.5, 1.5, steps=3))


# -- item 14: the keras.io compile path -------------------


def test_keras_io_compile_without_alpha_and_temperature_says_which_are_used():
    distiller = Distiller(mlp(seed=1), mlp())
    _, messages = caught(
        lambda: distiller.compile(
            "adam", student_loss_fn=SCE, distillation_loss_fn=keras.losses.KLDivergence()
        )
    )
    said = [m for m in messages if "keras.io example" in m]
    assert said and "alpha=0.5" in said[0] and "temperature=1" in said[0]
    assert "alpha=0.1" in said[0] and "temperature=3" in said[0]
    _, messages = caught(
        lambda: distiller.compile(
            "adam",
            student_loss_fn=SCE,
            distillation_loss_fn=keras.losses.KLDivergence(),
            alpha=0.1,
            temperature=3.0,
        )
    )
    assert not [m for m in messages if "keras.io example" in m]


# -- checks at the start of fit ----------------


def test_numpy_randomness_in_augment_is_refused_at_fit_start():
    def noisy(x, training):
        return x + np.random.normal(size=x.shape).astype("float32")

    x, y = data()
    distiller = compiled(Distiller(mlp(seed=1), mlp(), augment=noisy))
    with pytest.raises(ValueError, match=r"noisy.*traced.*keras\.random.*SeedGenerator"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_an_augment_changing_the_dtype_is_refused():
    x, y = data()
    distiller = compiled(
        Distiller(mlp(seed=1), mlp(), augment=lambda v, training: keras.ops.cast(v, "float16"))
    )
    with pytest.raises(ValueError, match=r"changed the dtype from float32 to float16"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_random_flip_on_signals_is_warned_about():
    _, messages = caught(
        lambda: Distiller(mlp((8, 1), seed=1), mlp((8, 1)), augment=keras.layers.RandomFlip())
    )
    assert any("RandomFlip" in m and "one image" in m for m in messages)


def test_nan_teacher_weights_get_a_clear_message():
    with pytest.raises(ValueError, match=r"teacher_weights.*finite.*nan"):
        Distiller([mlp(seed=1), mlp(seed=2)], mlp(), teacher_weights=[1.0, float("nan")])


def test_the_student_among_the_teachers_is_refused():
    student = mlp(name="the_student")
    with pytest.raises(ValueError, match=r"'the_student' is also teacher 1"):
        Distiller([mlp(seed=1), student], student)


def test_stored_top_k_classes_beyond_the_students_are_refused_before_the_first_step():
    x, y = data()
    targets = {
        "labels": y,
        "teacher_topk_values": np.zeros((16, 2), "float32"),
        "teacher_topk_indices": np.tile(np.array([[7, 1]], "int32"), (16, 1)),
        "teacher_rest_logsumexp": np.zeros((16,), "float32"),
    }
    distiller = compiled(Distiller(None, mlp()))
    with pytest.raises(ValueError, match=r"name class 7, but the student has 3 classes"):
        distiller.fit(x, targets, epochs=1, verbose=0)


class PruneLowMagnitude(keras.layers.Layer):
    """Stands for tfmot's wrapper (tfmot needs tf_keras in a subprocess)."""

    def __init__(self, end_step):
        super().__init__()
        self.pruning_schedule = type("Schedule", (), {"end_step": end_step})()


class UpdatePruningStep(keras.callbacks.Callback):
    pass


def pruned_student(end_step):
    """An object with tfmot's shape: a `layers` list holding a `PruneLowMagnitude`."""
    return type("Pruned", (), {"layers": [PruneLowMagnitude(end_step)], "name": "pruned"})()


def test_a_pruned_student_without_its_callback_is_refused_and_a_late_end_step_warned():
    with pytest.raises(ValueError, match=r"pruned.*UpdatePruningStep"):
        fit_checks.check_pruning(pruned_student(10), [], steps=16)
    _, messages = caught(
        lambda: fit_checks.check_pruning(pruned_student(10000), [UpdatePruningStep()], 16)
    )
    assert any("step 10000" in m and "16 steps" in m for m in messages)
    assert fit_checks.fit_steps(np.zeros((100, 4)), 32, 4, None) == 16
