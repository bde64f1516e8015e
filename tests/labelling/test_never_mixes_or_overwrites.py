"""label_with_teacher never mixes data or teachers, never touches files it did not write."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from keras_distill import Distiller, label_with_teacher, load_teacher_labels
from keras_distill._src.labelling import TeacherLabelsError
from keras_distill._src.teachers.outputs import TeacherOutputError

RNG = np.random.default_rng(0)
X = RNG.random((100, 8)).astype("float32")


def teacher_of(scale=1.0, fail_from=10**9):
    """A black box; every one made here has the same name (as two lambdas would)."""
    calls = {"n": 0}

    def teacher(batch):
        calls["n"] += 1
        out = scale * np.tanh(batch[:, :5] * 3.0)
        if calls["n"] >= fail_from:
            out[1, 2] = np.nan
        return out

    return teacher


def interrupted(data, folder, **kwargs):
    """Labels `data` until the teacher fails at its third call: two shards of 20 are written."""
    with pytest.raises(TeacherOutputError, match="NaN or infinite"):
        label_with_teacher(
            teacher_of(fail_from=3), data, folder, batch_size=20, shard_size=20, verbose=0, **kwargs
        )


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_resumed_dataset_run_refuses_other_data(tmp_path):
    interrupted(tf.data.Dataset.from_tensor_slices(X).batch(20), tmp_path)
    before = snapshot(tmp_path)
    other = tf.data.Dataset.from_tensor_slices(X[::-1].copy()).batch(20)  # same spec
    with pytest.raises(TeacherLabelsError, match=r"dataset differs .* first 40 examples .*shard 0"):
        label_with_teacher(teacher_of(), other, tmp_path, batch_size=20, shard_size=20, verbose=0)
    assert snapshot(tmp_path) == before
    same = tf.data.Dataset.from_tensor_slices(X).batch(20)
    manifest = label_with_teacher(
        teacher_of(), same, tmp_path, batch_size=20, shard_size=20, verbose=0
    )
    assert manifest["complete"] and manifest["num_examples"] == 100


def test_a_different_callable_teacher_without_an_id_is_refused(tmp_path):
    interrupted(X, tmp_path)
    before = snapshot(tmp_path)

    with pytest.raises(TeacherLabelsError, match=r"answers differently on the first 8 examples"):
        label_with_teacher(
            teacher_of(scale=10.0), X, tmp_path, batch_size=20, shard_size=20, verbose=0
        )
    assert snapshot(tmp_path) == before


def test_a_directory_of_user_files_is_refused_and_left_alone(tmp_path):
    files = {"notes.txt": b"mine", "shard-00000.tfrecord": b"also mine", "shard-draft.tmp": b"x"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(
        TeacherLabelsError,
        match=r"not empty \(notes.txt, shard-00000.tfrecord, "
        r"shard-draft.tmp\) and holds no keras-distill",
    ):
        label_with_teacher(lambda b: b[:, :3], X, tmp_path, verbose=0)
    assert snapshot(tmp_path) == files


def test_a_resume_deletes_only_its_own_temporary_file(tmp_path):
    interrupted(X, tmp_path)
    (tmp_path / "shard-00002.tfrecord.tmp").write_bytes(b"half a shard")  # a killed write
    (tmp_path / "shard-draft.tmp").write_bytes(b"the user's")
    label_with_teacher(teacher_of(), X, tmp_path, batch_size=20, shard_size=20, verbose=0)
    assert (tmp_path / "shard-draft.tmp").read_bytes() == b"the user's"
    assert not (tmp_path / "shard-00002.tfrecord.tmp").exists()


@pytest.mark.parametrize(
    "data", [X[:0], tf.data.Dataset.from_tensor_slices(X[:0]).batch(4)], ids=["arrays", "dataset"]
)
def test_empty_data_is_refused_and_nothing_is_written(tmp_path, data):
    folder = tmp_path / "out"
    with pytest.raises(TeacherLabelsError, match="The data to label is empty"):
        label_with_teacher(lambda b: b[:, :3], data, folder, verbose=0)
    assert not folder.exists()


@pytest.mark.slow
def test_shards_are_byte_identical_across_processes_and_hash_seeds(tmp_path):
    np.save(tmp_path / "x.npy", X)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from keras_distill import label_with_teacher
        x = np.load(sys.argv[1])
        label_with_teacher(lambda b: np.tanh(b[:, :5]), (x, np.arange(100) % 5), sys.argv[2],
                           shard_size=30, top_k=2, verbose=0)
        """
    )
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, TF_CPP_MIN_LOG_LEVEL="2")
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "x.npy"), str(tmp_path / seed)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    first, second = snapshot(tmp_path / "1"), snapshot(tmp_path / "2")
    assert len(first) == 5 and first == second  # 4 shards and the manifest
    assert sum(1 for _ in load_teacher_labels(tmp_path / "1", batch_size=None)) == 100


def edit(manifest, change):
    edited = json.loads(json.dumps(manifest))
    change(edited)
    return edited


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.clear() or None, r"format None; expected"),
        (lambda m: m.pop("features"), r"'features' must name the record fields"),
        (lambda m: m.pop("shards"), r"'shards' must be a list; found None"),
        (
            lambda m: m.update(num_examples="100"),
            r"'num_examples' must be the shards' total "
            r"100; found '100'",
        ),
        (lambda m: m.update(num_examples=99), r"'num_examples' must be the shards' total 100"),
        (
            lambda m: m["shards"].append(m["shards"][0]),
            r"shard 'shard-00000.tfrecord' is listed "
            "twice",
        ),
        (
            lambda m: m["settings"].update(output="logprobs"),
            r"settings\['output'\] must be one "
            r"of .*found 'logprobs'",
        ),
        (
            lambda m: m["features"]["teacher"].update(shape=[4]),
            r"do not match the manifest's "
            r"features\['teacher'\]",
        ),
    ],
)
def test_malformed_manifests_name_the_field_and_the_value(tmp_path, change, message):
    label_with_teacher(lambda b: b[:, :3], X, tmp_path, shard_size=50, verbose=0)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()), change)))
    with pytest.raises(TeacherLabelsError, match=message):
        load_teacher_labels(tmp_path)


def test_a_manifest_that_is_a_json_list_is_refused(tmp_path):
    label_with_teacher(lambda b: b[:, :3], X, tmp_path, verbose=0)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(TeacherLabelsError, match=r"must hold a JSON object; found list"):
        load_teacher_labels(tmp_path)


@pytest.mark.parametrize("classes", [12, 5])
def test_top_k_outputs_refuse_a_student_with_other_classes(tmp_path, classes):
    import keras

    label_with_teacher(lambda b: np.tanh(b) @ np.ones((8, 10)), X, tmp_path, top_k=3, verbose=0)
    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(classes)])
    distiller = Distiller(None, student)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(TeacherOutputError, match=rf"10 classes, but the student has {classes}"):
        distiller.fit(load_teacher_labels(tmp_path), verbose=0)
