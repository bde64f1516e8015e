"""tensorflow-model-optimization students, run with TF_USE_LEGACY_KERAS=1 in a subprocess."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

from keras_distill._src.training import tfmot

# The module's fixtures run once: its tests share one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("tfmot_students")

LEGACY = textwrap.dedent(
    """
    import json, os, sys, tempfile
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import keras
    import keras_distill as kd
    from keras_distill._src.training import tfmot
    from keras_distill._src.studies.datasets import load_digits

    split = load_digits()
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def mlp(hidden, seed):
        tf.keras.utils.set_random_seed(seed)
        layers = [tf.keras.Input((64,))]
        layers += [tf.keras.layers.Dense(u, activation="relu") for u in hidden]
        return tf.keras.Sequential(layers + [tf.keras.layers.Dense(10)])

    report = {"tf_keras": tf.keras.__name__}
    teacher = mlp([128], 0)
    teacher.compile("adam", loss, metrics=["accuracy"])
    teacher.fit(split.x_train, split.y_train, epochs=20, verbose=0)

    qat = tfmot.quantization_aware(mlp([32], 1))
    distiller = kd.Distiller(teacher, qat, temperature=2.0, alpha=0.5)
    report["distiller"] = type(distiller).__name__
    distiller.compile(tf.keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    history = distiller.fit(split.x_train, split.y_train, epochs=15, verbose=0,
                            callbacks=[kd.TemperatureScheduler(kd.schedules.Linear(2.0, 1.0, 14))])
    report["qat_history"] = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    exported = kd.micro.export(qat, None, tempfile.mkdtemp(), name="qat",
                               validation_data=(split.x_test, split.y_test))
    report["qat_export"] = exported.validation | {"ops": list(exported.ops),
                                                  "bytes": exported.model_bytes}

    steps = 15 * int(np.ceil(len(split.x_train) / 32))
    pruned, callbacks = tfmot.prune(mlp([32], 2), 0.75, end_step=steps // 2, frequency=20)
    distiller = kd.Distiller(teacher, pruned)
    distiller.compile(tf.keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    history = distiller.fit(split.x_train, split.y_train, epochs=15, verbose=0,
                            callbacks=callbacks + [kd.TemperatureScheduler(2.0, update="batch")])
    stripped = tfmot.strip(pruned)
    report["sparsity"] = tfmot.sparsity(stripped)
    report["pruned_temperature"] = history.history["temperature"][-1]
    exported = kd.micro.export(stripped, split.x_train, tempfile.mkdtemp(), name="pruned",
                               validation_data=(split.x_test, split.y_test))
    report["pruned_export"] = exported.validation | {"sparsity": exported.sparsity}
    # Pruning mistakes on real tfmot wrappers: no callback, a late end_step, no strip.
    late, late_callbacks = tfmot.prune(mlp([32], 4), 0.5, end_step=10000)
    weights = [w.copy() for w in late.get_weights()]
    distiller = kd.Distiller(teacher, late)
    distiller.compile(tf.keras.optimizers.Adam(1e-3), loss)
    try:
        distiller.fit(split.x_train[:512], split.y_train[:512], verbose=0)
    except ValueError as error:
        report["no_callback_error"] = str(error)
    report["no_callback_unchanged"] = all(
        np.array_equal(a, b) for a, b in zip(weights, late.get_weights()))
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.fit(split.x_train[:512], split.y_train[:512], batch_size=32, verbose=0,
                      callbacks=late_callbacks)
    report["late_warnings"] = [str(w.message) for w in caught]
    try:
        kd.micro.export(late, split.x_train, tempfile.mkdtemp(), name="unstripped")
    except kd.micro.MicroExportError as error:
        report["unstripped_error"] = str(error)
    try:
        kd.Distiller(keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)]), mlp([4], 3))
    except ValueError as error:
        report["mixed_error"] = str(error)
    print("REPORT " + json.dumps(report))
    """
)


# The Keras 3 behaviour tests (test_distiller, test_label_and_load), on tf_keras models.
BEHAVIOUR = textwrap.dedent(
    """
    import json, os, tempfile
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import keras_distill as kd
    from keras_distill._src.studies.datasets import load_digits

    split = load_digits()
    sce = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = split.x_train[:256], split.y_train[:256]

    def mlp(hidden, seed, outputs=10):
        tf.keras.utils.set_random_seed(seed)
        layers = [tf.keras.Input((64,))]
        layers += [tf.keras.layers.Dense(u, activation="relu") for u in hidden]
        return tf.keras.Sequential(layers + [tf.keras.layers.Dense(outputs)])

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    def kl(t, s, temperature):
        lt, ls = log_softmax(t / temperature), log_softmax(s / temperature)
        return temperature**2 * (np.exp(lt) * (lt - ls)).sum(-1)

    report = {}
    teacher = mlp([64], 0)
    teacher.compile("adam", sce)
    teacher.fit(split.x_train, split.y_train, epochs=10, verbose=0)
    t = teacher.predict(x, verbose=0)

    # the logs follow the formula
    student = mlp([8], 3)
    distiller = kd.Distiller(teacher, student, temperature=3.0, alpha=0.25)
    report["isinstance"] = [isinstance(distiller, kd.Distiller),
                            isinstance(distiller, kd.BaseDistiller)]
    distiller.compile(tf.keras.optimizers.SGD(0.0), sce, metrics=["accuracy"])
    logs = distiller.evaluate(x, y, return_dict=True, verbose=0)
    s = student.predict(x, verbose=0)
    expected_kl, expected_ce = float(kl(t, s, 3.0).mean()), float(sce(y, s))
    report["formula"] = [logs["distillation_loss"], expected_kl, logs["student_loss"],
                         expected_ce, logs["loss"], 0.25 * expected_ce + 0.75 * expected_kl]

    # stored teacher outputs train exactly like the live teacher
    folder = tempfile.mkdtemp()
    kd.label_with_teacher(teacher, (x, y), folder, verbose=0)

    def train(live):
        distiller = kd.Distiller(teacher if live else None, mlp([8], 3), temperature=3.0)
        distiller.compile(tf.keras.optimizers.SGD(0.1), sce, metrics=["accuracy"])
        data = (tf.data.Dataset.from_tensor_slices((x, y)).batch(32) if live
                else kd.load_teacher_labels(folder, batch_size=32))
        scheduler = kd.TemperatureScheduler(kd.schedules.Linear(3.0, 1.0, 2))
        history = distiller.fit(data, epochs=3, verbose=0, callbacks=[scheduler])
        return distiller.student.get_weights(), history.history

    (live_w, live_h), (stored_w, stored_h) = train(True), train(False)
    report["stored_vs_live"] = max(float(np.abs(a - b).max()) for a, b in zip(live_w, stored_w))
    report["stored_loss"] = [live_h["loss"], stored_h["loss"]]
    report["stored_temperature"] = stored_h["temperature"]

    # labelled and unlabelled examples mix; metrics count the labelled ones only
    kd.label_with_teacher(teacher, (x[:20], y[:20]), folder + "/labeled", verbose=0)
    kd.label_with_teacher(teacher, x[20:100], folder + "/pool", verbose=0)
    mixed = (kd.load_teacher_labels(folder + "/labeled", batch_size=None)
             .concatenate(kd.load_teacher_labels(folder + "/pool", batch_size=None)).batch(100))
    student = mlp([8], 4)
    distiller = kd.Distiller(None, student, temperature=2.0, alpha=0.5)
    distiller.compile(tf.keras.optimizers.SGD(0.0), sce, metrics=["accuracy"])
    logs = distiller.evaluate(mixed, return_dict=True, verbose=0)
    s = student.predict(x[:100], verbose=0)
    hard = -log_softmax(s[:20])[np.arange(20), y[:20]]
    report["mask"] = [logs["accuracy"], float((s[:20].argmax(-1) == y[:20]).mean()),
                      logs["student_loss"], float(hard.sum() / 100),
                      logs["distillation_loss"], float(kl(t[:100], s, 2.0).mean())]

    # multi-output models sum the distillation term over outputs
    def two_heads(hidden, seed):
        tf.keras.utils.set_random_seed(seed)
        inputs = tf.keras.Input((64,))
        h = tf.keras.layers.Dense(hidden, activation="relu")(inputs)
        return tf.keras.Model(inputs, {"digit": tf.keras.layers.Dense(10)(h),
                                       "parity": tf.keras.layers.Dense(2)(h)})

    big, small = two_heads(32, 0), two_heads(8, 1)
    distiller = kd.Distiller(big, small, temperature=2.0)
    distiller.compile(tf.keras.optimizers.SGD(0.0), loss={"digit": sce, "parity": sce})
    logs = distiller.evaluate(x, {"digit": y, "parity": y % 2}, return_dict=True, verbose=0)
    tb, sb = big.predict(x, verbose=0), small.predict(x, verbose=0)
    report["multi_output"] = [logs["distillation_loss"],
                              float(sum(kl(tb[k], sb[k], 2.0).mean() for k in tb))]

    # every construction check
    errors = []
    frozen = mlp([4], 5)
    frozen.trainable = False
    for arguments in [(teacher, teacher), (teacher, frozen), (teacher, mlp([4], 6, outputs=5)),
                      (teacher, tf.keras.layers.Dense(3))]:
        try:
            kd.Distiller(*arguments)
        except (ValueError, TypeError) as error:
            errors.append(str(error))
    try:
        kd.Distiller(teacher, mlp([4], 7), temperature=0.0)
    except ValueError as error:
        errors.append(str(error))
    report["errors"] = errors
    print("REPORT " + json.dumps(report))
    """
)


def run_legacy(script):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=900, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT ") :])


@pytest.fixture(scope="module")
def report():
    return run_legacy(LEGACY)


@pytest.fixture(scope="module")
def behaviour():
    return run_legacy(BEHAVIOUR)


@pytest.mark.slow
def test_tf_keras_distiller_is_a_distiller_and_follows_the_formula(behaviour):
    assert behaviour["isinstance"] == [True, True]
    kl, expected_kl, ce, expected_ce, total, expected_total = behaviour["formula"]
    assert kl == pytest.approx(expected_kl, rel=1e-4, abs=1e-6)
    assert ce == pytest.approx(expected_ce, rel=1e-4, abs=1e-6)
    assert total == pytest.approx(expected_total, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_tf_keras_stored_teacher_outputs_train_like_the_live_teacher(behaviour):
    assert behaviour["stored_vs_live"] < 1e-5
    live, stored = behaviour["stored_loss"]
    assert stored == pytest.approx(live, rel=1e-5, abs=1e-6)
    assert behaviour["stored_temperature"] == [3.0, 2.0, 1.0]


@pytest.mark.slow
def test_tf_keras_label_masks_and_multi_output(behaviour):
    accuracy, expected_accuracy, hard, expected_hard, kl, expected_kl = behaviour["mask"]
    assert accuracy == pytest.approx(expected_accuracy, abs=1e-6)
    assert hard == pytest.approx(expected_hard, rel=1e-4, abs=1e-6)
    assert kl == pytest.approx(expected_kl, rel=1e-4, abs=1e-6)
    got, expected = behaviour["multi_output"]
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_tf_keras_construction_checks(behaviour):
    same, frozen, mismatch, not_a_model, temperature = behaviour["errors"]
    assert "same model object" in same
    assert "no trainable weights" in frozen
    assert "must match at construction" in mismatch
    assert "`student` must be a tf_keras.Model; received Dense" in not_a_model
    assert "`temperature` must be a finite number > 0; received 0.0" in temperature


@pytest.mark.slow
def test_quantization_aware_distillation_exports_and_runs_in_tflm(report):
    assert report["tf_keras"].startswith("tf_keras")
    assert report["distiller"] == "TFKerasDistiller"
    history = report["qat_history"]
    assert history["temperature"][0] == 2.0 and history["temperature"][-1] == 1.0
    assert history["distillation_loss"][-1] < 0.5 * history["distillation_loss"][0]
    assert history["accuracy"][-1] >= 0.9
    qat = report["qat_export"]
    assert qat["agreement"] >= 0.97 and qat["int8_accuracy"] >= 0.9
    assert qat["ops"] == ["FULLY_CONNECTED"]


@pytest.mark.slow
def test_pruned_student_reaches_the_sparsity_with_tfmot_callbacks(report):
    assert 0.74 <= report["sparsity"] <= 0.76
    assert report["pruned_temperature"] == 2.0  # TemperatureScheduler ran beside UpdatePruningStep
    assert report["pruned_export"]["sparsity"] == pytest.approx(report["sparsity"])
    assert report["pruned_export"]["agreement"] >= 0.95


@pytest.mark.slow
def test_real_tfmot_pruning_mistakes_are_named(report):
    assert "pruned (2 PruneLowMagnitude layers)" in report["no_callback_error"]
    assert "UpdatePruningStep" in report["no_callback_error"]
    assert report["no_callback_unchanged"]  # refused before the first step
    assert any("step 10000" in m and "16 steps" in m for m in report["late_warnings"])
    assert "kd.strip(model)" in report["unstripped_error"]


@pytest.mark.slow
def test_mixing_keras_flavours_is_refused(report):
    assert "must both be Keras 3 models or both tf_keras" in report["mixed_error"]


def test_keras_3_users_get_told_what_to_set():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(RuntimeError, match="Set TF_USE_LEGACY_KERAS=1 before TensorFlow"):
        tfmot.quantization_aware(model)
    with pytest.raises(ValueError, match=r"`target_sparsity` must be in \(0, 1\); received 1.5"):
        tfmot.prune(model, 1.5, end_step=10)
