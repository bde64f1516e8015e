import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SCE, mlp
from numpy_references import reference_kl

from keras_distill import Distiller, losses
from keras_distill._src.utils.model_inspection import probability_outputs


def compiled(distiller, optimizer=None, **kwargs):
    distiller.compile(optimizer or keras.optimizers.Adam(3e-3), SCE, metrics=["accuracy"], **kwargs)
    return distiller


def assert_unchanged(model, weights):
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_distilled_student_learns_digits_and_teacher_is_unchanged(
    digits, teacher, teacher_weights, teacher_accuracy
):
    assert teacher_accuracy >= 0.95
    student = mlp([32], seed=1)
    distiller = compiled(Distiller(teacher, student, temperature=2.0, alpha=0.5))
    distiller.fit(digits.x_train, digits.y_train, epochs=25, batch_size=32, verbose=0)
    accuracy = distiller.evaluate(digits.x_test, digits.y_test, return_dict=True, verbose=0)
    assert accuracy["accuracy"] >= 0.93
    assert_unchanged(teacher, teacher_weights)
    assert teacher.trainable  # the user's teacher object is not modified


def test_only_the_student_is_trained_and_gets_optimizer_slots(digits, teacher):
    student = mlp([8], seed=2)
    distiller = compiled(Distiller(teacher, student))
    assert [id(v) for v in distiller.trainable_variables] == [
        id(v) for v in student.trainable_variables
    ]
    teacher_ids = {id(v) for v in teacher.variables}
    assert teacher_ids <= {id(v) for v in distiller.non_trainable_variables}
    distiller.fit(digits.x_train[:64], digits.y_train[:64], epochs=1, verbose=0)
    slot_shapes = sorted(tuple(v.shape) for v in distiller.optimizer.variables if len(v.shape))
    student_shapes = sorted(tuple(v.shape) for v in student.trainable_variables) * 2
    assert slot_shapes == sorted(student_shapes)  # Adam: two slots per student weight


def test_logs_and_the_objective_follow_the_formula(digits, teacher):
    student = mlp([8], seed=3)
    distiller = compiled(
        Distiller(teacher, student, temperature=3.0, alpha=0.25),
        optimizer=keras.optimizers.SGD(0.0),
    )
    x, y = digits.x_train[:256], digits.y_train[:256]
    history = distiller.fit(x, y, epochs=1, batch_size=64, validation_data=(x, y), verbose=0)
    logs = {key: values[-1] for key, values in history.history.items()}
    assert set(logs) == {
        "loss",
        "student_loss",
        "distillation_loss",
        "accuracy",
        "temperature",
        "alpha",
        "val_loss",
        "val_student_loss",
        "val_distillation_loss",
        "val_accuracy",
    }
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    expected_kl = reference_kl(t, s, 3.0).mean()
    expected_ce = float(SCE(y, s))
    assert logs["distillation_loss"] == pytest.approx(expected_kl, rel=1e-4, abs=1e-6)
    assert logs["student_loss"] == pytest.approx(expected_ce, rel=1e-4, abs=1e-6)
    assert logs["loss"] == pytest.approx(
        0.25 * expected_ce + 0.75 * expected_kl, rel=1e-4, abs=1e-6
    )
    assert logs["temperature"] == 3.0 and logs["alpha"] == 0.25
    evaluation = distiller.evaluate(x, y, return_dict=True, verbose=0)
    assert set(evaluation) == {"loss", "student_loss", "distillation_loss", "accuracy"}
    assert evaluation["distillation_loss"] == pytest.approx(expected_kl, rel=1e-4, abs=1e-6)


def test_call_and_predict_are_the_students(digits, teacher):
    student = mlp([8], seed=4)
    distiller = Distiller(teacher, student)
    x = digits.x_test[:10]
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0), atol=1e-6
    )
    np.testing.assert_allclose(distiller(x), student(x), atol=1e-6)


def test_softmax_teacher_is_detected_and_matches_the_logit_teacher(digits, teacher):
    x, y = digits.x_train[:128], digits.y_train[:128]
    softmax_teacher = keras.Sequential([keras.Input((64,)), teacher, keras.layers.Softmax()])
    dense_softmax = mlp([8], seed=5, activation="softmax")
    assert probability_outputs(softmax_teacher, "auto", "teacher")
    assert probability_outputs(dense_softmax, "auto", "teacher")
    assert not probability_outputs(teacher, "auto", "teacher")

    def distillation_loss(model, **kwargs):
        distiller = compiled(Distiller(model, mlp([8], seed=6), temperature=2.0, **kwargs))
        return distiller.evaluate(x, y, return_dict=True, verbose=0)["distillation_loss"]

    expected = distillation_loss(teacher)
    assert distillation_loss(softmax_teacher) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert distillation_loss(softmax_teacher, teacher_output="probabilities") == pytest.approx(
        expected, rel=1e-4, abs=1e-6
    )
    # Taking probabilities for logits is a different (wrong) objective.
    assert distillation_loss(softmax_teacher, teacher_output="logits") != pytest.approx(
        expected, rel=1e-2
    )


def test_softmax_student_trains_with_log_probabilities(digits, teacher):
    student = mlp([16], seed=7, activation="softmax")
    distiller = Distiller(teacher, student, temperature=2.0, alpha=0.5)
    distiller.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = distiller.fit(digits.x_train, digits.y_train, epochs=5, verbose=0)
    assert history.history["distillation_loss"][-1] < history.history["distillation_loss"][0]
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"temperature": 0.0}, ValueError, r"`temperature` must be .*> 0; received 0.0"),
        ({"temperature": -2}, ValueError, r"received -2.0"),
        ({"temperature": float("nan")}, ValueError, r"received nan"),
        ({"alpha": 1.5}, ValueError, r"`alpha` must be in \[0, 1\]; received 1.5"),
        ({"alpha": -0.1}, ValueError, r"received -0.1"),
        ({"teacher_output": "logit"}, ValueError, r"`teacher_output` must be one of .*'logit'"),
        ({"distillation_loss": "kld"}, ValueError, r"Unknown distillation loss 'kld'"),
    ],
)
def test_bad_arguments_raise_at_construction(teacher, kwargs, error, message):
    with pytest.raises(error, match=message):
        Distiller(teacher, mlp([4]), **kwargs)


def test_bad_models_raise_at_construction(teacher):
    with pytest.raises(ValueError, match="same model object"):
        Distiller(teacher, teacher)
    with pytest.raises(TypeError, match="`student` must be a keras.Model; received Dense"):
        Distiller(teacher, keras.layers.Dense(10))
    frozen = mlp([4])
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        Distiller(teacher, frozen)
    with pytest.raises(ValueError, match=r"must match at construction.*\(None, 10\).*\(None, 5\)"):
        Distiller(teacher, mlp([4], outputs=5))
    inputs = keras.Input((64,))
    two_heads = keras.Model(
        inputs, [keras.layers.Dense(10)(inputs), keras.layers.Dense(10)(inputs)]
    )
    with pytest.raises(ValueError, match="must match at construction"):
        Distiller(teacher, two_heads)


def test_unbuilt_models_are_checked_in_the_first_step(digits):
    teacher = keras.Sequential([keras.layers.Dense(10)])
    student = keras.Sequential([keras.layers.Dense(3)])
    distiller = compiled(Distiller(teacher, student))
    with pytest.raises(ValueError, match=r"must match in the training step"):
        distiller.fit(digits.x_train[:32], digits.y_train[:32] % 3, epochs=1, verbose=0)


def test_temperature_and_alpha_are_assignable_variables(teacher):
    distiller = Distiller(teacher, mlp([4]))
    distiller.temperature = 2.5
    distiller.alpha = 0.75
    assert float(distiller.temperature) == 2.5 and float(distiller.alpha) == 0.75
    assert not distiller.temperature.trainable and distiller.alpha.dtype == "float32"
    with pytest.raises(ValueError, match="received 0.0"):
        distiller.temperature = 0
    with pytest.raises(ValueError, match="received 2.0"):
        distiller.alpha = 2
    assert float(distiller.temperature) == 2.5  # a rejected value changes nothing


def test_tf_data_sample_weight_and_class_weight(digits, teacher):
    x, y = digits.x_train[:256], digits.y_train[:256]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    distiller = compiled(
        Distiller(teacher, mlp([8], seed=8), temperature=4.0), optimizer=keras.optimizers.SGD(0.0)
    )
    unweighted = distiller.evaluate(dataset, return_dict=True, verbose=0)
    weights = (y < 5).astype("float32")
    weighted = distiller.evaluate(x, y, sample_weight=weights, return_dict=True, verbose=0)
    t, s = teacher.predict(x, verbose=0), distiller.predict(x, verbose=0)
    expected = (reference_kl(t, s, 4.0) * weights).mean()
    assert weighted["distillation_loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert weighted["distillation_loss"] != pytest.approx(unweighted["distillation_loss"])
    history = distiller.fit(
        dataset, epochs=1, class_weight={c: 1.0 + c for c in range(10)}, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])


def two_head_model(hidden, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,))
    h = keras.layers.Dense(hidden, activation="relu")(inputs)
    return keras.Model(
        inputs, {"digit": keras.layers.Dense(10)(h), "parity": keras.layers.Dense(2)(h)}
    )


def test_multi_output_models_sum_the_distillation_loss_over_outputs(digits):
    teacher, student = two_head_model(64, 0), two_head_model(8, 1)
    x, y = digits.x_train[:128], digits.y_train[:128]
    targets = {"digit": y, "parity": y % 2}
    distiller = Distiller(teacher, student, temperature=2.0)
    distiller.compile(keras.optimizers.SGD(0.0), loss={"digit": SCE, "parity": SCE})
    logs = distiller.evaluate(x, targets, return_dict=True, verbose=0)
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    expected = sum(reference_kl(t[k], s[k], 2.0).mean() for k in ("digit", "parity"))
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    distiller.compile("adam", loss={"digit": SCE, "parity": SCE})
    history = distiller.fit(x, targets, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def sequence_model(units, seed, vocab=12):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((7,), dtype="int32"),
            keras.layers.Embedding(vocab, 8),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(vocab),
        ]
    )


def test_sequence_outputs_distil_over_the_last_axis():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 12, size=(64, 7)).astype("int32")
    y = np.roll(x, -1, axis=1)
    teacher, student = sequence_model(32, 0), sequence_model(4, 1)
    head = teacher.layers[-1]
    head.set_weights([20.0 * w for w in head.get_weights()])  # a confident teacher
    distiller = Distiller(teacher, student, temperature=2.0)
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    logs = distiller.evaluate(x, y, return_dict=True, verbose=0)
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    expected = reference_kl(t, s, 2.0).mean()
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-3, abs=1e-7)
    distiller.alpha = 0.0  # the next token is not predictable from this one: teacher only
    distiller.compile(keras.optimizers.Adam(2e-2), SCE)
    weights = (x > 0).astype("float32")  # per-token weights, e.g. a padding mask
    history = distiller.fit(x, y, sample_weight=weights, epochs=20, verbose=0)
    losses_seen = history.history["distillation_loss"]
    assert losses_seen[-1] < 0.5 * losses_seen[0]


def test_regularization_losses_are_the_students_only(digits):
    keras.utils.set_random_seed(0)
    regularized_teacher = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(10, kernel_regularizer=keras.regularizers.L2(10.0))]
    )
    student = mlp([4], seed=1)
    distiller = compiled(
        Distiller(regularized_teacher, student), optimizer=keras.optimizers.SGD(0.0)
    )
    logs = distiller.evaluate(digits.x_train[:64], digits.y_train[:64], return_dict=True, verbose=0)
    expected_ce = float(SCE(digits.y_train[:64], student.predict(digits.x_train[:64], verbose=0)))
    assert logs["student_loss"] == pytest.approx(expected_ce, rel=1e-4, abs=1e-6)


def test_custom_callable_loss_is_used(digits, teacher):
    calls = []

    def halved_mse(t, s, temperature):
        calls.append(temperature)
        return 0.5 * losses.logit_mse(t, s)

    x, y = digits.x_train[:64], digits.y_train[:64]
    distiller = compiled(Distiller(teacher, mlp([4], seed=2), distillation_loss=halved_mse))
    logs = distiller.evaluate(x, y, return_dict=True, verbose=0)
    t, s = teacher.predict(x, verbose=0), distiller.predict(x, verbose=0)
    assert calls
    assert logs["distillation_loss"] == pytest.approx(
        0.5 * ((t - s) ** 2).mean(), rel=1e-4, abs=1e-6
    )


def test_standard_callbacks(digits, teacher, tmp_path):
    x, y = digits.x_train, digits.y_train
    distiller = compiled(Distiller(teacher, mlp([8], seed=9)))
    checkpoint = tmp_path / "best.keras"
    history = distiller.fit(
        x,
        y,
        epochs=30,
        batch_size=64,
        verbose=0,
        validation_data=(digits.x_test, digits.y_test),
        callbacks=[
            keras.callbacks.EarlyStopping("val_loss", patience=0, min_delta=10.0),
            keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss"),
            keras.callbacks.TensorBoard(tmp_path / "logs"),
        ],
    )
    assert len(history.history["loss"]) == 2  # stopped by EarlyStopping
    assert checkpoint.exists()
    restored = keras.models.load_model(checkpoint)
    assert isinstance(restored, Distiller)
    events = list((tmp_path / "logs" / "train").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    tags = {
        value.tag
        for event in tf.compat.v1.train.summary_iterator(str(events[0]))
        for value in event.summary.value
    }
    assert {"epoch_temperature", "epoch_distillation_loss", "epoch_alpha"} <= tags


def test_values_assigned_around_the_setters_cannot_train_unnoticed(digits, teacher):
    distiller = compiled(Distiller(teacher, mlp([4])))
    x, y = digits.x_train[:64], digits.y_train[:64]
    distiller.temperature.assign(-3.0)
    with pytest.raises(ValueError, match=r"distiller.temperature holds -3.0 .*received -3.0"):
        distiller.fit(x, y, verbose=0)
    distiller.temperature = 1.0
    distiller.alpha.assign(1.5)
    with pytest.raises(ValueError, match=r"distiller.alpha holds 1.5"):
        distiller.fit(x, y, verbose=0)
    distiller.alpha = 0.5

    class Sneaky(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:
                self.model.temperature.assign(-1.0)

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"temperature must be > 0"):
        distiller.fit(x, y, batch_size=16, callbacks=[Sneaky()], verbose=0)
