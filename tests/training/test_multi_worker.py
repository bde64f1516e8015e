"""tf.distribute.MultiWorkerMirroredStrategy with two local worker processes."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_distill import label_with_teacher, load_teacher_labels
from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.training import multi_worker

TIMEOUT = 300

# The toy task every worker script trains on (Keras 3 models).
MODEL_AND_DATA = """
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 16)).astype("float32")
y = rng.integers(0, 4, size=256)

def model(units, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((16,)), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(4)])
"""

DISTIL = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import keras
    import keras_distill  # imported before the strategy is created, on purpose
    from keras_distill import Distiller, TemperatureScheduler
    from keras_distill._src.training import schedules

    if os.environ.get("TF_CONFIG"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    MODEL_AND_DATA

    with strategy.scope():
        if sys.argv[1] == "plain":
            net = model(8, 1)
            net.compile(keras.optimizers.SGD(0.1),
                        keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        else:
            net = Distiller(model(32, 0), model(8, 1), temperature=3.0, alpha=0.3)
            net.compile(keras.optimizers.SGD(0.1),
                        keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)  # the global batch
    annealing = TemperatureScheduler(schedules.Linear(3.0, 1.0, 2))
    callbacks = [] if sys.argv[1] == "plain" else [annealing]
    history = net.fit(data, epochs=3, verbose=0, callbacks=callbacks)
    student = net if sys.argv[1] == "plain" else net.student
    print("RESULT " + json.dumps({
        "history": history.history,
        "weights": [w.tolist() for w in student.get_weights()],
    }), flush=True)
    """
).replace("MODEL_AND_DATA", MODEL_AND_DATA)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_env(ports, index):
    env = dict(os.environ)
    env["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def run_cluster(script, argument, workers=2):
    """Starts `workers` processes on 127.0.0.1; returns their (returncode, output)."""
    ports = free_ports(workers)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argument.split()],
            env=worker_env(ports, i),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(workers)
    ]
    results = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=TIMEOUT)
            results.append((process.returncode, output))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def parse(output):
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.slow
def test_two_workers_match_a_single_process_on_the_same_global_batch():
    single = subprocess.run(
        [sys.executable, "-c", DISTIL, "distil"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
    )
    assert single.returncode == 0, single.stderr[-3000:]
    reference = parse(single.stdout)
    results = run_cluster(DISTIL, "distil")
    reports = []
    for code, output in results:
        assert code == 0, output[-3000:]
        reports.append(parse(output))
    chief, other = reports
    for a, b in zip(chief["weights"], reference["weights"]):
        np.testing.assert_allclose(a, b, atol=1e-5)  # stated tolerance
    for key in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(
            chief["history"][key], reference["history"][key], rtol=1e-5, atol=1e-6
        )
        assert chief["history"][key] == other["history"][key]  # global, not one worker's
    assert chief["history"]["temperature"] == other["history"]["temperature"] == [3.0, 2.0, 1.0]


@pytest.mark.slow
def test_plain_keras_fit_still_fails_multi_worker_on_this_keras():
    """If this fails, Keras fixed keras-team/keras#20585: retire multi_worker's workaround."""
    import keras

    if multi_worker._version(keras.__version__) > multi_worker.KERAS_20585_LAST_CHECKED:
        pytest.skip(f"Keras {keras.__version__} is newer than the versions checked for #20585")
    results = run_cluster(DISTIL, "plain")
    assert all(code != 0 for code, _ in results)
    assert any("PerReplica" in output for _, output in results)


LEGACY = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    from keras_distill import Distiller, TemperatureScheduler
    from keras_distill._src.training import schedules

    if os.environ.get("TF_CONFIG"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = rng.integers(0, 4, size=256)

    def model(units, seed):
        tf.keras.utils.set_random_seed(seed)
        return tf.keras.Sequential([tf.keras.Input((16,)),
                                    tf.keras.layers.Dense(units, activation="relu"),
                                    tf.keras.layers.Dense(4)])

    with strategy.scope():
        net = Distiller(model(32, 0), model(8, 1), temperature=3.0, alpha=0.3)
        net.compile(tf.keras.optimizers.SGD(0.1),
                    tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    history = net.fit(data, epochs=2, verbose=0,
                      callbacks=[TemperatureScheduler(schedules.Linear(3.0, 1.0, 1))])
    print("RESULT " + json.dumps({
        "type": type(net).__name__, "history": history.history,
        "weights": [w.tolist() for w in net.student.get_weights()],
    }), flush=True)
    """
).replace("MODEL_AND_DATA", MODEL_AND_DATA)


@pytest.mark.slow
def test_tf_keras_distiller_works_multi_worker_too():
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    single = subprocess.run(
        [sys.executable, "-c", LEGACY], capture_output=True, text=True, timeout=TIMEOUT, env=env
    )
    assert single.returncode == 0, single.stderr[-3000:]
    reference = parse(single.stdout)
    reports = []
    for code, output in run_cluster(LEGACY, ""):
        assert code == 0, output[-3000:]
        reports.append(parse(output))
    assert reports[0]["type"] == "TFKerasDistiller"
    for a, b in zip(reports[0]["weights"], reference["weights"]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert (
        reports[0]["history"]["temperature"] == reports[1]["history"]["temperature"] == [3.0, 1.0]
    )


BACKUP = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import keras
    from keras_distill import Distiller, TemperatureScheduler
    from keras_distill._src.training import schedules

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    MODEL_AND_DATA

    with strategy.scope():
        net = Distiller(model(32, 0), model(8, 1), temperature=3.0, alpha=0.3)
        net.compile(keras.optimizers.SGD(0.1),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if sys.argv[2] == "interrupt" and epoch == 2:
                raise RuntimeError("interrupted")

    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(sys.argv[1], f"worker-{index}")),
        TemperatureScheduler(schedules.Linear(4.0, 1.0, 3)),
        Interrupt(),
    ]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    try:
        history = net.fit(data, epochs=4, verbose=0, callbacks=callbacks)
    except RuntimeError:
        print("INTERRUPTED", flush=True)
    else:
        print("RESULT " + json.dumps({
            "epochs": history.epoch, "temperature": history.history["temperature"],
            "weights": [w.tolist() for w in net.student.get_weights()],
        }), flush=True)
    """
).replace("MODEL_AND_DATA", MODEL_AND_DATA)


@pytest.mark.slow
def test_backup_and_restore_with_a_backup_dir_per_worker_resumes_the_cluster(tmp_path):
    interrupted = run_cluster(BACKUP, str(tmp_path / "backup") + " interrupt")
    assert all("INTERRUPTED" in output for _, output in interrupted)
    resumed = [parse(output) for _, output in run_cluster(BACKUP, str(tmp_path / "backup") + " go")]
    whole = [parse(output) for _, output in run_cluster(BACKUP, str(tmp_path / "fresh") + " go")]
    assert resumed[0]["epochs"] == [2, 3] and resumed[0]["temperature"] == [2.0, 1.0]
    assert whole[0]["temperature"] == [4.0, 3.0, 2.0, 1.0]
    for a, b in zip(resumed[0]["weights"], whole[0]["weights"]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert resumed[0]["weights"] == resumed[1]["weights"]


LABEL = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from keras_distill import label_with_teacher

    def slow_teacher(batch):
        time.sleep(float(sys.argv[2]))
        return np.cos(batch[:, :5] * 3.0)

    x = np.random.default_rng(2).random((1200, 8)).astype("float32")
    label_with_teacher(slow_teacher, x, sys.argv[1], batch_size=20, shard_size=60,
                       teacher_id="cos-v1", verbose=0)  # part from TF_CONFIG
    """
).replace("MODEL_AND_DATA", MODEL_AND_DATA)


def cos_teacher(batch):
    return np.cos(batch[:, :5] * 3.0)


@pytest.mark.slow
def test_two_labelling_workers_one_killed_and_resumed_give_the_single_process_result(tmp_path):
    target = tmp_path / "parts"
    ports = free_ports(2)
    fast = subprocess.Popen(
        [sys.executable, "-c", LABEL, str(target), "0"], env=worker_env(ports, 0)
    )
    slow = subprocess.Popen(
        [sys.executable, "-c", LABEL, str(target), "0.3"], env=worker_env(ports, 1)
    )
    try:
        assert fast.wait(timeout=TIMEOUT) == 0
        part = target / "manifest-part-00001-of-00002.json"
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            if part.exists() and len(json.loads(part.read_text())["shards"]) >= 2:
                break
            time.sleep(0.05)
        slow.kill()
        slow.wait(timeout=30)
    finally:
        for process in (fast, slow):
            if process.poll() is None:
                process.kill()
    assert not json.loads(part.read_text())["complete"]
    with pytest.raises(TeacherLabelsError, match=r"of 2 parts, missing none, unfinished \[1\]"):
        load_teacher_labels(target)
    first_part = (target / "part-00000-shard-00000.tfrecord").read_bytes()
    x = np.random.default_rng(2).random((1200, 8)).astype("float32")
    kwargs = dict(batch_size=20, shard_size=60, teacher_id="cos-v1", verbose=0)
    label_with_teacher(cos_teacher, x, target, worker_index=1, num_workers=2, **kwargs)
    assert (target / "part-00000-shard-00000.tfrecord").read_bytes() == first_part  # untouched
    label_with_teacher(cos_teacher, x, tmp_path / "single", **kwargs)

    def arrays(path):
        xs, ts = [], []
        for batch_x, targets in load_teacher_labels(path, batch_size=100):
            xs.append(batch_x.numpy())
            ts.append(targets["teacher_logits"].numpy())
        return np.concatenate(xs), np.concatenate(ts)

    parts_x, parts_t = arrays(target)
    single_x, single_t = arrays(tmp_path / "single")
    np.testing.assert_array_equal(parts_x, single_x)
    np.testing.assert_array_equal(parts_t, single_t)


def test_an_incomplete_set_of_parts_is_refused_unless_asked(tmp_path):
    x = np.random.default_rng(3).random((90, 6)).astype("float32")
    for index in (0, 2):
        label_with_teacher(
            cos_teacher,
            x,
            tmp_path,
            worker_index=index,
            num_workers=3,
            teacher_id="cos-v1",
            verbose=0,
        )
    with pytest.raises(TeacherLabelsError, match=r"of 3 parts, missing \[1\]"):
        load_teacher_labels(tmp_path)
    partial = load_teacher_labels(tmp_path, batch_size=None, allow_incomplete=True)
    assert sum(1 for _ in partial) == 60
    with pytest.raises(TeacherLabelsError, match=r"part 0 of 3\), another run's; this is part 0"):
        label_with_teacher(
            cos_teacher, x, tmp_path, worker_index=0, num_workers=2, teacher_id="cos-v1", verbose=0
        )
    with pytest.raises(ValueError, match="worker_index=3, num_workers=3"):
        label_with_teacher(cos_teacher, x, tmp_path, worker_index=3, num_workers=3)


def test_worker_part_comes_from_tf_config(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {
                "cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                "task": {"type": "worker", "index": 1},
            }
        ),
    )
    x = np.random.default_rng(4).random((30, 6)).astype("float32")
    manifest = label_with_teacher(cos_teacher, x, tmp_path, teacher_id="cos-v1", verbose=0)
    assert manifest["worker_index"] == 2 and manifest["settings"]["num_workers"] == 3
    assert manifest["num_examples"] == 10
    assert (tmp_path / "manifest-part-00002-of-00003.json").exists()
