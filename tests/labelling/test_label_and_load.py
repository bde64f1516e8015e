import json
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SCE, mlp
from numpy_references import log_softmax, reference_kl

from keras_distill import Distiller, TemperatureScheduler, label_with_teacher, load_teacher_labels
from keras_distill._src.labelling import TeacherLabelsError
from keras_distill._src.teachers.outputs import TeacherOutputError
from keras_distill._src.training import schedules


def collect(dataset):
    xs, targets = [], {}
    for x, target in dataset:
        xs.append(x.numpy())
        for key, value in target.items():
            targets.setdefault(key, []).append(value.numpy())
    return np.concatenate(xs), {k: np.concatenate(v) for k, v in targets.items()}


def test_keras_teacher_round_trip(digits, teacher, tmp_path):
    x, y = digits.x_train[:300], digits.y_train[:300]
    manifest = label_with_teacher(teacher, (x, y), tmp_path, shard_size=128, verbose=0)
    assert manifest["complete"] and manifest["num_examples"] == 300
    assert [s["examples"] for s in manifest["shards"]] == [128, 128, 44]
    assert manifest["settings"]["output"] == "logits"
    loaded_x, targets = collect(load_teacher_labels(tmp_path, batch_size=64))
    np.testing.assert_array_equal(loaded_x, x)
    np.testing.assert_array_equal(targets["labels"], y)
    np.testing.assert_array_equal(targets["label_mask"], np.ones(300))
    np.testing.assert_allclose(targets["teacher_logits"], teacher.predict(x, verbose=0), atol=1e-5)


def test_softmax_teacher_is_stored_as_probabilities_and_loaded_as_log(digits, teacher, tmp_path):
    softmax_teacher = keras.Sequential([keras.Input((64,)), teacher, keras.layers.Softmax()])
    x = digits.x_train[:50]
    manifest = label_with_teacher(softmax_teacher, x, tmp_path, verbose=0)
    assert manifest["settings"]["output"] == "probabilities"
    _, targets = collect(load_teacher_labels(tmp_path))
    expected = log_softmax(teacher.predict(x, verbose=0))
    np.testing.assert_allclose(targets["teacher_logits"], expected, atol=1e-4)
    assert set(targets["label_mask"]) == {0.0}  # no labels were given


def flaky_teacher(fail_from):
    calls = {"n": 0}

    def teacher(batch):
        calls["n"] += 1
        out = np.tanh(batch[:, :5] * 3.0)
        if calls["n"] >= fail_from:
            out[1, 2] = np.nan
        return out

    return teacher


def test_bad_black_box_outputs_are_refused_and_completed_shards_kept(tmp_path):
    x = np.random.default_rng(0).random((200, 8)).astype("float32")
    with pytest.raises(TeacherOutputError, match=r"NaN or infinite values for examples \[121\]"):
        label_with_teacher(
            flaky_teacher(fail_from=4),
            x,
            tmp_path,
            batch_size=40,
            shard_size=50,
            teacher_id="v1",
            verbose=0,
        )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert not manifest["complete"] and len(manifest["shards"]) == 2
    first = (tmp_path / "shard-00000.tfrecord").read_bytes()
    with pytest.raises(TeacherLabelsError, match="incomplete .100 examples in 2 shards"):
        load_teacher_labels(tmp_path)
    # resume with a fixed teacher: the completed shards stay as they are
    done = label_with_teacher(
        flaky_teacher(fail_from=10**9),
        x,
        tmp_path,
        batch_size=40,
        shard_size=50,
        teacher_id="v1",
        verbose=0,
    )
    assert done["complete"] and (tmp_path / "shard-00000.tfrecord").read_bytes() == first
    fresh = tmp_path / "fresh"
    label_with_teacher(
        flaky_teacher(fail_from=10**9), x, fresh, batch_size=40, shard_size=50, verbose=0
    )
    for a, b in zip(sorted(tmp_path.glob("*.tfrecord")), sorted(fresh.glob("*.tfrecord"))):
        assert a.read_bytes() == b.read_bytes()


def test_wrong_batch_size_and_bad_probabilities_are_refused(tmp_path):
    x = np.zeros((10, 3), "float32")
    with pytest.raises(TeacherLabelsError, match="returned 9 outputs for a batch of 10 inputs"):
        label_with_teacher(lambda b: b[:-1], x, tmp_path / "a", verbose=0)
    with pytest.raises(TeacherOutputError, match="sum to 1 over the last axis"):
        label_with_teacher(lambda b: b + 1, x, tmp_path / "b", output="probabilities", verbose=0)
    with pytest.raises(TeacherLabelsError, match="needs integer class ids"):
        label_with_teacher(lambda b: b[:, 0], x, tmp_path / "c", output="labels", verbose=0)
    with pytest.raises(ValueError, match="`output` must be one of"):
        label_with_teacher(lambda b: b, x, tmp_path / "d", output="logprobs")


def test_changed_teacher_or_settings_are_refused_on_resume(digits, teacher, tmp_path):
    x = digits.x_train[:64]
    label_with_teacher(teacher, x, tmp_path, verbose=0)
    with pytest.raises(TeacherLabelsError, match="made with other top_k"):
        label_with_teacher(teacher, x, tmp_path, top_k=3, verbose=0)
    with pytest.raises(TeacherLabelsError, match="made with other teacher"):
        label_with_teacher(mlp([4]), x, tmp_path, verbose=0)
    with pytest.raises(TeacherLabelsError, match="made with other data"):
        label_with_teacher(teacher, digits.x_train[1:65], tmp_path, verbose=0)


def test_missing_corrupt_and_foreign_directories_are_refused(digits, teacher, tmp_path):
    label_with_teacher(teacher, digits.x_train[:100], tmp_path, shard_size=40, verbose=0)
    shard = tmp_path / "shard-00001.tfrecord"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(
        TeacherLabelsError, match="'shard-00001.tfrecord' does not match its checksum"
    ):
        load_teacher_labels(tmp_path)
    assert load_teacher_labels(tmp_path, verify=False) is not None  # explicitly unchecked
    shard.unlink()
    with pytest.raises(TeacherLabelsError, match="'shard-00001.tfrecord' .* is missing"):
        load_teacher_labels(tmp_path)
    with pytest.raises(TeacherLabelsError, match="No manifest.json"):
        load_teacher_labels(tmp_path / "elsewhere")


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from keras_distill import label_with_teacher

    def slow_teacher(batch):
        time.sleep(0.05)
        return np.sin(batch[:, :6] * 4.0)

    x = np.random.default_rng(1).random((2000, 10)).astype("float32")
    label_with_teacher(slow_teacher, x, sys.argv[1], batch_size=20, shard_size=100,
                       teacher_id="sine-v1", verbose=0)
    """
)


def slow_teacher(batch):
    return np.sin(batch[:, :6] * 4.0)


@pytest.mark.slow
def test_resume_after_the_process_is_killed_gives_the_uninterrupted_result(tmp_path):
    target = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(target)])
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            manifest = target / "manifest.json"
            if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 3:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the labelling process wrote no shards in time")
        process.kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    partial = json.loads((target / "manifest.json").read_text())
    assert not partial["complete"] and 3 <= len(partial["shards"]) < 20
    x = np.random.default_rng(1).random((2000, 10)).astype("float32")
    kwargs = dict(batch_size=20, shard_size=100, teacher_id="sine-v1", verbose=0)
    label_with_teacher(slow_teacher, x, target, **kwargs)
    label_with_teacher(slow_teacher, x, tmp_path / "whole", **kwargs)
    killed_x, killed = collect(load_teacher_labels(target))
    whole_x, whole = collect(load_teacher_labels(tmp_path / "whole"))
    np.testing.assert_array_equal(killed_x, whole_x)
    np.testing.assert_array_equal(killed["teacher_logits"], whole["teacher_logits"])
    assert not list(target.glob("*.tmp"))


def test_top_k_stores_less_and_all_but_one_class_is_exact(digits, teacher, tmp_path):
    x, y = digits.x_train[:256], digits.y_train[:256]
    label_with_teacher(teacher, (x, y), tmp_path / "full", verbose=0)
    label_with_teacher(teacher, (x, y), tmp_path / "top9", top_k=9, verbose=0)
    label_with_teacher(teacher, (x, y), tmp_path / "top2", top_k=2, verbose=0)
    _, top2 = collect(load_teacher_labels(tmp_path / "top2"))
    logits = teacher.predict(x, verbose=0)
    np.testing.assert_array_equal(top2["teacher_topk_indices"][:, 0], logits.argmax(-1))

    def distillation_loss(name):
        distiller = Distiller(None, mlp([8], seed=1), temperature=3.0)
        distiller.compile(keras.optimizers.SGD(0.0), SCE)
        data = load_teacher_labels(tmp_path / name, batch_size=64)
        return distiller.evaluate(data, return_dict=True, verbose=0)["distillation_loss"]

    full = distillation_loss("full")
    student = mlp([8], seed=1).predict(x, verbose=0)
    assert full == pytest.approx(reference_kl(logits, student, 3.0).mean(), rel=1e-4, abs=1e-6)
    assert distillation_loss("top9") == pytest.approx(
        full, rel=1e-4, abs=1e-6
    )  # one rest class: exact
    assert 0 < distillation_loss("top2") < full


def test_top_k_cuts_the_bytes_per_example_for_large_vocabularies(tmp_path):
    x = np.random.default_rng(0).random((64, 4)).astype("float32")
    projection = np.random.default_rng(1).normal(size=(4, 2000)).astype("float32")
    full = label_with_teacher(lambda b: b @ projection, x, tmp_path / "full", verbose=0)
    top = label_with_teacher(lambda b: b @ projection, x, tmp_path / "top", top_k=20, verbose=0)
    assert full["bytes_per_example"] > 8000  # 2,000 float32 logits
    assert top["bytes_per_example"] < 0.05 * full["bytes_per_example"]


def test_stored_teacher_training_matches_live_teacher_training(digits, teacher, tmp_path):
    x, y = digits.x_train[:256], digits.y_train[:256]
    label_with_teacher(teacher, (x, y), tmp_path, verbose=0)

    def train(live):
        distiller = Distiller(teacher if live else None, mlp([8], seed=3), temperature=3.0)
        distiller.compile(keras.optimizers.SGD(0.1), SCE, metrics=["accuracy"])
        data = (
            tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
            if live
            else load_teacher_labels(tmp_path, batch_size=32)
        )
        scheduler = TemperatureScheduler(schedules.Linear(3.0, 1.0, 2))
        history = distiller.fit(data, epochs=3, verbose=0, callbacks=[scheduler])
        return distiller.student.get_weights(), history.history

    live_weights, live_history = train(live=True)
    stored_weights, stored_history = train(live=False)
    for a, b in zip(live_weights, stored_weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(live_history["loss"], stored_history["loss"], rtol=1e-5, atol=1e-6)
    assert stored_history["temperature"] == [3.0, 2.0, 1.0]


def test_labeled_and_unlabeled_examples_mix(digits, teacher, tmp_path):
    """A small labelled set plus a teacher-labelled unlabelled pool, as the docs show."""
    x = digits.x_train[:100]
    label_with_teacher(teacher, (x[:20], digits.y_train[:20]), tmp_path / "labeled", verbose=0)
    label_with_teacher(teacher, x[20:], tmp_path / "pool", verbose=0)
    mixed = (
        load_teacher_labels(tmp_path / "labeled", batch_size=None)
        .concatenate(load_teacher_labels(tmp_path / "pool", batch_size=None))
        .batch(100)
    )
    student = mlp([8], seed=4)
    distiller = Distiller(None, student, temperature=2.0, alpha=0.5)
    distiller.compile(keras.optimizers.SGD(0.0), SCE, metrics=["accuracy"])
    logs = distiller.evaluate(mixed, return_dict=True, verbose=0)
    s = student.predict(x, verbose=0)
    # metrics count the labelled examples only
    assert logs["accuracy"] == pytest.approx(
        (s[:20].argmax(-1) == digits.y_train[:20]).mean(), abs=1e-6
    )
    hard = -log_softmax(s[:20])[np.arange(20), digits.y_train[:20]]
    assert logs["student_loss"] == pytest.approx(hard.sum() / 100, rel=1e-4, abs=1e-6)
    t = teacher.predict(x, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(
        reference_kl(t, s, 2.0).mean(), rel=1e-4, abs=1e-6
    )
    distiller.compile("adam", SCE)
    history = distiller.fit(mixed.shuffle(4).repeat(5), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_score_distillation_with_confidence(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype("float32")
    direction = rng.normal(size=6).astype("float32")

    def rater(batch):  # a black-box quality scorer that also says how sure it is
        scores = batch @ direction
        confidence = (np.abs(scores) > 0.5).astype("float32")
        return scores, confidence

    manifest = label_with_teacher(rater, x, tmp_path, output="scores", verbose=0)
    assert manifest["features"]["confidence"]["shape"] == []
    keras.utils.set_random_seed(0)
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    distiller = Distiller(None, student, alpha=0.0)
    distiller.compile(keras.optimizers.SGD(0.0), "mse")
    data = load_teacher_labels(tmp_path, batch_size=400)
    logs = distiller.evaluate(data, return_dict=True, verbose=0)
    scores, confidence = rater(x)
    expected = (confidence * (student.predict(x, verbose=0)[:, 0] - scores) ** 2).mean()
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    distiller.compile(keras.optimizers.Adam(0.05), "mse")
    history = distiller.fit(load_teacher_labels(tmp_path, batch_size=32), epochs=20, verbose=0)
    assert history.history["distillation_loss"][-1] < 0.05 * history.history["distillation_loss"][0]


def test_teacher_labels_output_trains_on_pseudo_labels(digits, teacher, tmp_path):
    x = digits.x_train

    def black_box(batch):
        return teacher.predict(batch, verbose=0).argmax(-1)

    label_with_teacher(black_box, x, tmp_path, output="labels", verbose=0)
    distiller = Distiller(None, mlp([16], seed=5), temperature=1.0, alpha=0.0)
    distiller.compile(keras.optimizers.Adam(3e-3), SCE, metrics=["accuracy"])
    distiller.fit(
        load_teacher_labels(tmp_path, batch_size=32, shuffle=2000, seed=0), epochs=15, verbose=0
    )
    accuracy = distiller.evaluate(digits.x_test, digits.y_test, return_dict=True, verbose=0)
    assert accuracy["accuracy"] >= 0.85  # trained without a single true label


def test_masked_sequence_distillation_with_top_k(tmp_path):
    rng = np.random.default_rng(0)
    vocab, length = 12, 7
    x = rng.integers(1, vocab, size=(64, length)).astype("int32")
    x[:, 5:] = 0  # padding

    def model(units, seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [
                keras.Input((length,), dtype="int32"),
                keras.layers.Embedding(vocab, 8, mask_zero=True),
                keras.layers.Dense(units, activation="relu"),
                keras.layers.Dense(vocab),
            ]
        )

    teacher, student = model(32, 0), model(4, 1)
    head = teacher.layers[-1]
    head.set_weights([20.0 * w for w in head.get_weights()])  # a confident teacher
    label_with_teacher(teacher, x, tmp_path, top_k=vocab - 1, verbose=0)
    distiller = Distiller(None, student, temperature=2.0, alpha=0.0)
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    logs = distiller.evaluate(load_teacher_labels(tmp_path, 64), return_dict=True, verbose=0)
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    per_token = reference_kl(t, s, 2.0)
    expected = per_token[:, :5].mean()  # padded positions do not count
    assert logs["distillation_loss"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert logs["distillation_loss"] != pytest.approx(per_token.mean(), rel=1e-2)


def test_stored_mode_errors(digits, tmp_path):
    distiller = Distiller(None, mlp([4]))
    distiller.compile("adam", SCE)
    with pytest.raises(ValueError, match=r"Distiller\(teacher=None\) trains from stored"):
        distiller.fit(digits.x_train[:32], digits.y_train[:32], verbose=0)
    label_with_teacher(lambda b: b[:, :7], digits.x_train[:32], tmp_path, verbose=0)
    with pytest.raises(ValueError, match=r"teacher with 7 classes, but the student has 10 classes"):
        distiller.fit(load_teacher_labels(tmp_path), verbose=0)


def test_stored_outputs_only_fit_the_inputs_they_were_computed_on(digits, teacher, tmp_path):
    """Consistent teaching: augmenting the inputs breaks stored targets, not a live teacher."""
    x = digits.x_train[:200]
    label_with_teacher(teacher, x, tmp_path, verbose=0)
    _, stored = collect(load_teacher_labels(tmp_path))
    augmented = x + np.random.default_rng(0).normal(scale=0.3, size=x.shape).astype("float32")
    live = teacher.predict(augmented, verbose=0)
    agreement = (live.argmax(-1) == stored["teacher_logits"].argmax(-1)).mean()
    assert np.abs(stored["teacher_logits"] - teacher.predict(x, verbose=0)).max() < 1e-4
    assert agreement < 0.97  # the stored targets no longer describe the augmented inputs


def test_in_memory_loading_parses_once_and_reshuffles_like_reading_from_disk(digits, tmp_path):
    x, y = digits.x_train[:100], digits.y_train[:100]
    label_with_teacher(lambda b: b[:, :10], (x, y), tmp_path, shard_size=32, verbose=0)
    epochs = {}
    for cache in (True, False):
        dataset = load_teacher_labels(tmp_path, batch_size=16, shuffle=100, seed=3, cache=cache)
        assert int(dataset.cardinality()) == 7  # Keras' progress bar knows the steps
        epochs[cache] = [collect(dataset)[0] for _ in range(2)]
    for first, second in epochs.values():
        assert sorted(map(tuple, first)) == sorted(map(tuple, x))  # every example once
        assert not np.array_equal(first, second)  # reshuffled every epoch
    np.testing.assert_array_equal(epochs[True], epochs[False])  # the same order, seeded
    cached = load_teacher_labels(tmp_path, batch_size=16, cache=True)
    collect(cached)
    for shard in tmp_path.glob("*.tfrecord*"):
        shard.unlink()
    np.testing.assert_array_equal(collect(cached)[0], x)  # from memory: no file read again
    single = load_teacher_labels(tmp_path, batch_size=None, verify=False, cache=True)
    with pytest.raises(tf.errors.NotFoundError):
        next(iter(single))
    with pytest.raises(ValueError, match=r"`cache` must be 'auto', True or False; received 'yes'"):
        load_teacher_labels(tmp_path / "not there", cache="yes")  # checked before any reading
