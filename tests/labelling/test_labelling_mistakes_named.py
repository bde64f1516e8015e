"""Mistakes made with stored teacher outputs get a clear error, a warning or the right result:
another teacher in a complete folder, two writers, padded prompts, unknown file systems."""

import json
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import mlp

import keras_distill as kd
from keras_distill._src.labelling import TeacherLabelsError
from keras_distill._src.labelling.manifest import Manifest, Settings
from keras_distill._src.teachers import generation

RNG = np.random.default_rng(0)
X = RNG.random((40, 6)).astype("float32")
Y = np.arange(40) % 3
PROMPTS = np.array([[1, 2, 0], [3, 4, 5]])
SEQUENCES = dict(output="sequences", vocabulary_size=8, max_length=8, teacher_id="echo")


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def stored_logits(folder):
    return np.concatenate(
        [t["teacher_logits"] for _, t in kd.load_teacher_labels(folder).as_numpy_iterator()]
    )


def echo(prompts):  # a generating teacher: answers each prompt with its first token, then 6
    return [np.array([np.asarray(p).reshape(-1)[0], 6]) for p in prompts]


# -- one manifest record, the old JSON form still read --------------------------------------


def test_a_manifest_in_the_stored_json_form_round_trips_unchanged():
    stored = {
        "format": "keras_distill.teacher_labels/1",
        "settings": {
            "teacher": "callable:m.f",
            "data": "arrays:0123456789abcdef",
            "output": "logits",
            "top_k": None,
            "shard_size": 20,
            "num_workers": 1,
        },
        "worker_index": 0,
        "shards": [{"file": "shard-00000.tfrecord", "examples": 20, "sha256": "a" * 64}],
        "complete": True,
        "features": {
            "x": {"dtype": "float32", "shape": [6]},
            "teacher": {"dtype": "float32", "shape": [3]},
        },
        "num_examples": 20,
        "bytes_per_example": 61.0,
        "teacher_probe": "0123456789abcdef",
        "teacher_classes": 3,
    }
    manifest = Manifest.from_json(json.loads(json.dumps(stored)))
    assert manifest.settings == Settings(
        "callable:m.f", "arrays:0123456789abcdef", "logits", None, 20, 1
    )
    assert manifest.facts == {"teacher_probe": "0123456789abcdef", "teacher_classes": 3}
    assert manifest.to_json() == stored


# -- a complete folder keeps its teacher's outputs ---------------------------------------------


def test_a_complete_folder_refuses_another_callable_teacher_naming_both(tmp_path):
    kd.label_with_teacher(lambda b: b[:, :3], X, tmp_path, verbose=0)
    before = snapshot(tmp_path)
    with pytest.raises(
        TeacherLabelsError, match=r"answers differently .*refusing to replace"
    ) as error:
        kd.label_with_teacher(lambda b: 10 * b[:, :3], X, tmp_path, verbose=0)
    stored = json.loads(before["manifest.json"])["teacher_probe"]
    assert stored in str(error.value) and str(error.value).count("outputs digest") == 2
    assert snapshot(tmp_path) == before


def test_overwrite_relabels_a_complete_folder_with_the_new_teacher(tmp_path):
    kd.label_with_teacher(lambda b: b[:, :3], X, tmp_path, shard_size=15, verbose=0)
    kd.label_with_teacher(lambda b: 10 * b[:, :3], X, tmp_path, overwrite=True, verbose=0)
    np.testing.assert_allclose(stored_logits(tmp_path), 10 * X[:, :3], rtol=1e-6, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "shard-00000.tfrecord"]


def test_a_complete_folder_refuses_a_teacher_id_reused_by_mistake(tmp_path):
    kd.label_with_teacher(lambda b: b[:, :3], X, tmp_path, teacher_id="v1", verbose=0)
    with pytest.raises(TeacherLabelsError, match=r"teacher_id='v1' is the same"):
        kd.label_with_teacher(lambda b: -b[:, :3], X, tmp_path, teacher_id="v1", verbose=0)
    np.testing.assert_allclose(stored_logits(tmp_path), X[:, :3], rtol=1e-6, atol=1e-6)


def test_a_complete_folder_of_the_same_teacher_is_returned_without_calling_it_on_the_data(
    tmp_path,
):
    first = kd.label_with_teacher(
        lambda b: b[:, :3], X, tmp_path, batch_size=10, teacher_id="v1", verbose=0
    )
    calls = []

    def counted(batch):
        calls.append(len(batch))
        return batch[:, :3]

    again = kd.label_with_teacher(counted, X, tmp_path, batch_size=10, teacher_id="v1", verbose=0)
    assert again == first
    assert calls == [8]  # only the probe of the first examples


def test_a_complete_folder_of_other_settings_is_relabelled_with_overwrite(digits, tmp_path):
    teacher = mlp([8])
    x = digits.x_train[:30]
    kd.label_with_teacher(teacher, x, tmp_path, verbose=0)
    with pytest.raises(TeacherLabelsError, match=r"made with other top_k .*stored: \{'top_k'"):
        kd.label_with_teacher(teacher, x, tmp_path, top_k=3, verbose=0)
    manifest = kd.label_with_teacher(teacher, x, tmp_path, top_k=3, overwrite=True, verbose=0)
    assert manifest["settings"]["top_k"] == 3 and manifest["num_examples"] == 30


def test_the_sequence_path_refuses_and_overwrites_a_complete_folder(tmp_path):
    kd.label_with_teacher(echo, [[1, 2], [3]], tmp_path, verbose=0, **SEQUENCES)
    other = {**SEQUENCES, "teacher_id": "echo-v2"}
    with pytest.raises(TeacherLabelsError, match=r"other teacher .*'id:echo'.*'id:echo-v2'"):
        kd.label_with_teacher(echo, [[1, 2], [3]], tmp_path, verbose=0, **other)
    manifest = kd.label_with_teacher(
        echo, [[1, 2], [3]], tmp_path, overwrite=True, verbose=0, **other
    )
    assert manifest["settings"]["teacher"] == "id:echo-v2" and manifest["num_examples"] == 2


# -- a lock per output folder -----------------------------------------------------------------


def test_a_folder_locked_by_a_live_process_is_refused_at_once_and_left_alone(tmp_path):
    kd.label_with_teacher(lambda b: b[:, :3], X[:20], tmp_path, shard_size=10, verbose=0)
    owner = {"host": "labeller-7", "pid": 4242}  # another machine: never taken over
    (tmp_path / "manifest.json.lock").write_text(json.dumps(owner))
    before = snapshot(tmp_path)
    with pytest.raises(TeacherLabelsError, match=r"pid 4242 on host 'labeller-7'"):
        kd.label_with_teacher(lambda b: b[:, :3], X, tmp_path, overwrite=True, verbose=0)
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "manifest.json.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    with pytest.warns(UserWarning, match=rf"lock .* of process {dead.pid} .* no longer running"):
        manifest = kd.label_with_teacher(lambda b: b[:, :3], X, tmp_path, verbose=0)
    assert manifest["complete"] and not lock.exists()


def test_the_lock_is_released_when_the_teacher_fails(tmp_path):
    def failing(batch):
        raise RuntimeError("the teacher API answered 503")

    with pytest.raises(RuntimeError, match="503"):
        kd.label_with_teacher(failing, X, tmp_path, verbose=0)
    assert not (tmp_path / "manifest.json.lock").exists()
    assert kd.label_with_teacher(lambda b: b[:, :3], X, tmp_path, verbose=0)["complete"]


HELD_WRITER = textwrap.dedent(
    """
    import pathlib, sys, time
    import numpy as np
    from keras_distill import label_with_teacher

    folder, signals = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])

    def held(batch):  # under the lock: says so, then waits until the test has tried to write
        if (folder / "manifest.json.lock").exists():
            (signals / "labelling").touch()
            deadline = time.time() + 240
            while not (signals / "release").exists() and time.time() < deadline:
                time.sleep(0.02)
        return batch[:, :3]

    x = np.random.default_rng(0).random((40, 6)).astype("float32")
    label_with_teacher(held, x, folder, batch_size=4, shard_size=8, verbose=0)
    """
)


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_writes_and_the_first_finishes(tmp_path):
    folder, signals = tmp_path / "labels", tmp_path / "signals"
    signals.mkdir()
    process = subprocess.Popen([sys.executable, "-c", HELD_WRITER, str(folder), str(signals)])
    try:
        deadline = time.time() + 240
        while not (signals / "labelling").exists():  # the child holds the lock and waits
            assert time.time() < deadline and process.poll() is None, "the writer never started"
            time.sleep(0.02)
        with pytest.raises(TeacherLabelsError, match=rf"pid {process.pid} on host"):
            kd.label_with_teacher(lambda b: -b[:, :3], X, folder, overwrite=True, verbose=0)
        (signals / "release").touch()
        assert process.wait(timeout=240) == 0
    finally:
        if process.poll() is None:
            process.kill()
    x = np.random.default_rng(0).random((40, 6)).astype("float32")
    np.testing.assert_allclose(stored_logits(folder), x[:, :3], rtol=1e-6, atol=1e-6)
    assert not (folder / "manifest.json.lock").exists()


# -- prompts --------------------------------------------------------------------------------


def test_padded_prompts_are_stored_without_their_trailing_pads(tmp_path):
    kd.label_with_teacher(echo, PROMPTS, tmp_path, verbose=0, **SEQUENCES)
    rows = [x for x, _ in kd.load_teacher_labels(tmp_path, batch_size=None).as_numpy_iterator()]
    assert [r.tolist() for r in rows] == [[1, 2, 1, 6, 0, 0, 0, 0], [3, 4, 5, 3, 6, 0, 0, 0]]


def test_an_all_padding_prompt_is_refused_naming_its_index(tmp_path):
    with pytest.raises(TeacherLabelsError, match=r"Prompt 0 is empty \(no token other than pad"):
        kd.label_with_teacher(
            echo, np.array([[0, 0, 0], [1, 2, 0]]), tmp_path / "a", verbose=0, **SEQUENCES
        )
    assert not (tmp_path / "a").exists()


def test_float_tokens_are_named_as_such_not_as_outside_the_vocabulary(tmp_path):
    with pytest.raises(TeacherLabelsError, match=r"Prompt 1 must hold integer token ids; .*float"):
        kd.label_with_teacher(echo, [[1, 2], [1.5, 2.0]], tmp_path, verbose=0, **SEQUENCES)
    with pytest.raises(TeacherLabelsError, match=r"response of prompt 0 must hold integer token"):
        kd.label_with_teacher(
            lambda b: [np.array([1.5])] * len(b), [[1, 2]], tmp_path, verbose=0, **SEQUENCES
        )


@pytest.fixture(scope="module")
def language_model():
    from keras_distill._src.studies.architectures import causal_lm

    return causal_lm(8, 6, blocks=1, width=8)


def test_keras_generator_refuses_an_empty_prompt(language_model):
    generate = generation.keras_generator(language_model, 2)
    with pytest.raises(ValueError, match=r"Prompt 1 is empty"):
        generate([[1, 2], []])
    with pytest.raises(ValueError, match=r"Prompt 0 is empty"):
        generate(np.array([[0, 0]]))


def test_keras_generator_refuses_a_prompt_longer_than_the_model_input(language_model):
    generate = generation.keras_generator(language_model, 2)
    with pytest.raises(
        ValueError,
        match=r"Prompt 0 has 7 tokens, more than the model's input "
        r"length 6",
    ):
        generate([[1] * 7])


def test_keras_generator_continues_after_the_last_real_token_of_a_padded_prompt(language_model):
    generate = generation.keras_generator(language_model, 2)
    padded, plain = generate(np.array([[1, 2, 0, 0]])), generate([[1, 2]])
    np.testing.assert_array_equal(padded[0][0], plain[0][0])


# -- paths ----------------------------------------------------------------------------------


def test_a_path_of_an_unknown_file_system_is_refused_and_no_local_folder_made(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TeacherLabelsError, match=r"no file system for nosuchfs:// is installed"):
        kd.label_with_teacher(lambda b: b[:, :3], X, "nosuchfs://labels/run1", verbose=0)
    assert list(tmp_path.iterdir()) == []


def test_labels_are_written_resumed_and_loaded_on_the_in_memory_file_system(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a local folder named 'ram:' would appear
    path = f"ram://labels/{tmp_path.name}/run1"
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        return batch[:, :3]

    with pytest.raises(RuntimeError, match="interrupted"):
        kd.label_with_teacher(flaky, (X, Y), path, batch_size=10, shard_size=10, verbose=0)
    assert len(json.loads(tf.io.gfile.GFile(path + "/manifest.json").read())["shards"]) == 2
    manifest = kd.label_with_teacher(flaky, (X, Y), path, batch_size=10, shard_size=10, verbose=0)
    assert manifest["complete"] and calls["n"] == 6  # 3 calls, the probe, the two batches left
    assert not tf.io.gfile.exists(path + "/manifest.json.lock")
    loaded = list(kd.load_teacher_labels(path, batch_size=None).as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([x for x, _ in loaded]), X)
    np.testing.assert_array_equal([t["labels"] for _, t in loaded], Y)
    assert list(tmp_path.iterdir()) == []


# -- the Beam path: the same checks through the same functions ------------------------------

beam = pytest.importorskip("apache_beam", reason="apache-beam is optional (keras-distill[beam])")
kbeam = pytest.importorskip("keras_distill.labelling.beam")


@pytest.mark.parametrize("labels", [Y[:30], np.arange(60) % 3], ids=["fewer", "more"])
def test_both_paths_refuse_labels_that_are_not_one_per_input(tmp_path, labels):
    message = rf"The inputs have 40 examples but the labels have {len(labels)}"
    with pytest.raises(TeacherLabelsError, match=message):
        kd.label_with_teacher(lambda b: b[:, :3], (X, labels), tmp_path / "local", verbose=0)
    with pytest.raises(TeacherLabelsError, match=message):
        kbeam.label(lambda b: b[:, :3], (X, labels), tmp_path / "beam")
    assert not (tmp_path / "beam").exists() and not (tmp_path / "local").exists()


def test_both_paths_store_the_same_records_of_padded_prompts(tmp_path):
    kd.label_with_teacher(echo, PROMPTS, tmp_path / "local", verbose=0, **SEQUENCES)
    kbeam.label(echo, PROMPTS, tmp_path / "beam", **SEQUENCES)
    local, on_beam = (
        [
            x.tolist()
            for x, _ in kd.load_teacher_labels(tmp_path / p, batch_size=None).as_numpy_iterator()
        ]
        for p in ("local", "beam")
    )
    assert local == on_beam == [[1, 2, 1, 6, 0, 0, 0, 0], [3, 4, 5, 3, 6, 0, 0, 0]]


def test_both_paths_refuse_an_all_padding_prompt_naming_its_index(tmp_path):
    prompts = np.array([[1, 2, 0], [0, 0, 0]])
    for label in (kd.label_with_teacher, kbeam.label):
        with pytest.raises(TeacherLabelsError, match=r"Prompt 1 is empty"):
            label(echo, prompts, tmp_path / label.__name__, **SEQUENCES)


def test_beam_refuses_another_teacher_in_a_complete_folder_and_overwrites_on_request(tmp_path):
    kbeam.label(lambda b: b[:, :3], X, tmp_path, shard_size=20)
    with pytest.raises(TeacherLabelsError, match=r"answers differently .*refusing to replace"):
        kbeam.label(lambda b: 10 * b[:, :3], X, tmp_path, shard_size=20)
    kbeam.label(lambda b: 10 * b[:, :3], X, tmp_path, shard_size=20, overwrite=True)
    np.testing.assert_allclose(stored_logits(tmp_path), 10 * X[:, :3], rtol=1e-6, atol=1e-6)


def test_beam_refuses_a_folder_locked_by_another_writer(tmp_path):
    tmp_path.joinpath("manifest.json.lock").write_text(json.dumps({"host": "h", "pid": 1}))
    with pytest.raises(TeacherLabelsError, match=r"being written by another process \(pid 1"):
        kbeam.label(lambda b: b[:, :3], X, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json.lock"]


def test_label_with_teacher_transform_given_a_bare_callable_says_what_to_pass(tmp_path):
    with pytest.raises(TypeError, match=r"wrap a callable teacher as CallableModelHandler"):
        kbeam.LabelWithTeacher(
            lambda b: b, tmp_path, kbeam.label_settings("id:t", "logits", None, 10)
        )


def test_beam_writes_and_loads_on_the_in_memory_file_system(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a local folder named 'ram:' would appear
    path = f"ram://labels-beam/{tmp_path.name}"
    manifest = kbeam.label(lambda b: b[:, :3], (X, Y), path, shard_size=15)
    assert manifest["num_examples"] == 40 and len(manifest["shards"]) == 3
    np.testing.assert_allclose(stored_logits(path), X[:, :3], rtol=1e-6, atol=1e-6)
    assert list(tmp_path.iterdir()) == []


def test_beam_resumes_an_interrupted_run_on_the_in_memory_file_system(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = f"ram://labels-beam-resume/{tmp_path.name}"
    interrupted = {"yes": True}

    def teacher(batch):  # the same outputs every time; the first run dies on its last shard
        if interrupted["yes"] and float(batch[0, 0]) == float(X[30, 0]):
            raise RuntimeError("worker lost")
        return batch[:, :3]

    with pytest.raises(Exception, match="worker lost"):
        kbeam.label(teacher, (X, Y), path, shard_size=10, teacher_id="t")
    assert not tf.io.gfile.exists(path + "/manifest.json")  # nothing claims to be complete
    interrupted["yes"] = False
    manifest = kbeam.label(teacher, (X, Y), path, shard_size=10, teacher_id="t")
    assert manifest["complete"] and manifest["num_examples"] == 40
    assert sorted(tf.io.gfile.listdir(path)) == ["manifest.json"] + [
        shard["file"] for shard in manifest["shards"]
    ]  # no lock, no staging left
    np.testing.assert_allclose(stored_logits(path), X[:, :3], rtol=1e-6, atol=1e-6)
    assert list(tmp_path.iterdir()) == []
