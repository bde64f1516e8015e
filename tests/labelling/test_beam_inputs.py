"""Beam labelling's inputs (arrays, tf.data, TFRecords) and its staging folder on ram://."""

import json
import uuid

import numpy as np
import pytest
import tensorflow as tf

import keras_distill as kd
from keras_distill._src.labelling import TeacherLabelsError, lock
from keras_distill._src.utils import storage

beam = pytest.importorskip("apache_beam", reason="apache-beam is optional (keras-distill[beam])")
kbeam = pytest.importorskip("keras_distill.labelling.beam")
from keras_distill._src.labelling import beam_inputs  # noqa: E402


def ram(name):
    return f"ram://beam-inputs-{uuid.uuid4().hex[:8]}/{name}"


def stored_manifest(path):
    return json.loads(storage.read_text(storage.join(str(path), "manifest.json")))


def staging_left(directory):
    names = storage.listdir(directory) if storage.isdir(directory) else []
    return [n for n in names if n.startswith(".staging-")]


def small_keras_teacher():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])


def test_label_to_a_ram_path_leaves_no_staging_and_writes_the_local_bytes(digits, tmp_path):
    x, y = digits.x_train[:450], digits.y_train[:450]
    model = small_keras_teacher()  # saved to the ram:// staging folder, loaded by the worker
    kd.label_with_teacher(model, (x, y), tmp_path / "local", shard_size=200, verbose=0)
    path, root = ram("run"), ram("staging-root")
    storage.makedirs(root)
    result = kbeam.label(model, (x, y), path, shard_size=200)
    assert result["complete"] and result["num_examples"] == 450
    assert [s["sha256"] for s in result["shards"]] == [
        s["sha256"] for s in stored_manifest(tmp_path / "local")["shards"]
    ]
    assert storage.listdir(path) == [
        "manifest.json",
        "shard-00000.tfrecord",
        "shard-00001.tfrecord",
        "shard-00002.tfrecord",
    ]  # no staging folder, no lock
    again = kbeam.label(model, (x, y), ram("run2"), shard_size=200, staging_dir=root)
    assert again["shards"] == result["shards"] and storage.listdir(root) == []


def test_a_failing_teacher_leaves_no_staging_files(digits):
    x = digits.x_train[:300]

    def failing(batch):
        raise RuntimeError("the teacher API answered 503")

    path, root = ram("run"), ram("staging-root")
    storage.makedirs(root)
    with pytest.raises(Exception, match="the teacher API answered 503"):
        kbeam.label(failing, x, path, shard_size=100, staging_dir=root)
    with pytest.raises(Exception, match="the teacher API answered 503"):
        kbeam.label(failing, x, path, shard_size=100)  # staging inside the output
    assert storage.listdir(root) == [] and staging_left(path) == []
    assert not storage.exists(storage.join(path, "manifest.json"))


def write_records(directory, x, y, per_file):
    storage.makedirs(directory)
    for number, first in enumerate(range(0, len(x), per_file)):
        name = storage.join(directory, f"part-{number:02d}.tfrecord")
        with tf.io.TFRecordWriter(name) as writer:
            for xi, yi in zip(x[first : first + per_file], y[first : first + per_file]):
                features = {
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=xi)),
                    "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[yi])),
                }
                example = tf.train.Example(features=tf.train.Features(feature=features))
                writer.write(example.SerializeToString())


def parse_digit(record):
    spec = {
        "x": tf.io.FixedLenFeature([64], tf.float32),
        "y": tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = tf.io.parse_single_example(record, spec)
    return parsed["x"], parsed["y"]


def test_arrays_a_dataset_and_tfrecords_of_the_same_examples_give_the_same_manifest(digits):
    x, y = digits.x_train[:230].astype("float32"), digits.y_train[:230].astype("int64")
    records = ram("records")
    write_records(records, x, y, per_file=100)  # files of 100, 100, 30: not shard-aligned
    inputs = {
        "arrays": (x, y),
        "dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(37),
        "tfrecords": kbeam.TFRecordInputs(storage.join(records, "part-*.tfrecord"), parse_digit),
    }
    paths = {name: ram(name) for name in inputs}
    manifests = {
        name: kbeam.label(lambda b: b[:, :6], data, paths[name], shard_size=64)
        for name, data in inputs.items()
    }
    assert manifests["arrays"]["settings"]["data"].startswith("arrays:")
    assert manifests["dataset"] == manifests["arrays"]
    assert manifests["tfrecords"] == manifests["arrays"]
    assert [s["examples"] for s in manifests["arrays"]["shards"]] == [64, 64, 64, 38]
    loaded = kd.load_teacher_labels(paths["tfrecords"], batch_size=None).as_numpy_iterator()
    np.testing.assert_array_equal(np.stack([xi for xi, _ in loaded]), x)


def test_a_dataset_is_streamed_one_shard_at_a_time():
    pulled = []

    def batches():
        for number in range(500):
            pulled.append(number)
            yield np.full((4, 2), number, "float32")

    dataset = tf.data.Dataset.from_generator(
        batches, output_signature=tf.TensorSpec((None, 2), tf.float32)
    )
    shards = beam_inputs.shard_batches(dataset, 10)
    first = next(shards)
    assert first[1] is None
    assert first[0][:, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    assert len(pulled) < 20  # three batches of 4 make the first shard (tf.data reads a few ahead)
    assert [len(x) for x, _ in shards] == [10] * 199


def test_shard_chunks_are_views_of_the_arrays_covering_every_index_once():
    x, labels = np.arange(50, dtype="float32").reshape(25, 2), np.arange(25) % 3
    chunks = kbeam.shard_chunks(x, labels, shard_size=10)
    assert [(c.shard, c.first, c.last) for c in chunks] == [(0, 0, 9), (1, 10, 19), (2, 20, 24)]
    np.testing.assert_array_equal(np.concatenate([c.x for c in chunks]), x)
    np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), labels)
    assert all(np.shares_memory(c.x, x) for c in chunks)
    assert kbeam.shard_chunks(x, shard_size=10)[2].labels is None


def test_shard_chunks_refuse_a_bad_size_and_labels_of_another_length():
    x = np.zeros((25, 2), "float32")
    with pytest.raises(ValueError, match=r"`shard_size` must be >= 1; received 0"):
        kbeam.shard_chunks(x, shard_size=0)
    with pytest.raises(TeacherLabelsError, match=r"25 examples and the labels 24"):
        kbeam.shard_chunks(x, np.zeros(24), shard_size=10)


@pytest.mark.parametrize(
    "data, message",
    [
        (
            lambda: tf.data.Dataset.from_tensor_slices({"image": np.zeros((4, 2))}).batch(2),
            "must give `x` or `\\(x, y\\)` tensors",
        ),
        (lambda: tf.data.Dataset.from_tensor_slices(np.zeros(4)), "Batch it first"),
        (lambda: tf.data.Dataset.from_tensor_slices(np.zeros((0, 2))).batch(2), "empty"),
        (
            lambda: kbeam.TFRecordInputs("ram://beam-inputs-none/*.tfrecord", parse_digit),
            "no file matches 'ram://beam-inputs-none/\\*.tfrecord'",
        ),
        (
            lambda: tf.data.Dataset.from_generator(
                lambda: iter([(np.zeros((2, 2)), np.zeros(2)), (np.zeros((2, 2)), np.zeros(1))]),
                output_signature=(tf.TensorSpec((None, 2)), tf.TensorSpec((None,))),
            ),
            "Batch 1 of the data has inputs of shape \\(2, 2\\) and labels of shape \\(1,\\)",
        ),
        ((np.zeros((3, 2)), np.zeros(2)), "3 examples but the labels have 2"),
        ({"x": np.zeros((3, 2))}, "received a dict with keys \\['x'\\]"),
    ],
    ids=["dicts", "unbatched", "empty", "no-files", "labels-missing", "arrays", "dict"],
)
def test_bad_inputs_are_named_before_the_pipeline_and_leave_no_staging(data, message):
    path = ram("run")
    data = data() if callable(data) else data
    with pytest.raises(TeacherLabelsError, match=message):
        kbeam.label(lambda b: b[:, :2], data, path, shard_size=2)
    assert staging_left(path) == []
    assert not storage.exists(storage.join(path, "manifest.json"))


def test_a_parse_fn_that_gives_dicts_is_refused():
    records = ram("records")
    write_records(records, np.zeros((3, 64), "float32"), np.zeros(3, "int64"), per_file=3)
    inputs = kbeam.TFRecordInputs(
        storage.join(records, "*.tfrecord"), lambda r: {"x": parse_digit(r)[0]}
    )
    with pytest.raises(TeacherLabelsError, match="TFRecordInputs.parse_fn must give"):
        kbeam.label(lambda b: b[:, :2], inputs, ram("run"), shard_size=2)


def test_a_killed_runs_staging_folder_neither_looks_foreign_nor_stays(digits, tmp_path):
    x = digits.x_train[:120]
    stale = tmp_path / f".staging-{uuid.uuid4().hex}"
    stale.mkdir()
    (stale / "x-00000.npy").write_bytes(b"half written")
    (tmp_path / "shard-00000.tfrecord").write_bytes(b"half written")  # and a half shard
    lock.check_output_directory(str(tmp_path))  # a failed run's folder, not a foreign one
    result = kbeam.label(lambda b: b[:, :4], x, tmp_path, shard_size=50)
    assert result["complete"] and staging_left(str(tmp_path)) == []
    other = tmp_path / "other"
    other.mkdir()
    (other / ".staging-notes").mkdir()  # not the name a run gives its staging: foreign
    with pytest.raises(TeacherLabelsError, match="not empty"):
        lock.check_output_directory(str(other))


def test_the_streamed_fingerprint_is_the_arrays_fingerprint():
    from keras_distill._src.teachers.black_box import fingerprint_arrays

    x, y = np.arange(70.0).reshape(35, 2), np.arange(35)
    with beam_inputs.Staging(ram("staging")) as staging:
        staged = staging.stage(tf.data.Dataset.from_tensor_slices((x, y)).batch(6), 8)
        assert staged.data_id == f"arrays:{fingerprint_arrays(x, y)}"
        assert len(staged.ranges) == 5 and staged.head.tolist() == x[:8].tolist()


def test_an_unbatched_dataset_for_a_keras_teacher_is_refused_before_anything_is_written():
    dataset = tf.data.Dataset.from_tensor_slices(np.zeros((6, 64), "float32"))  # not batched
    path = ram("run")
    with pytest.raises(TeacherLabelsError, match="the shape of one example of this teacher"):
        kbeam.label(small_keras_teacher(), dataset, path, shard_size=2)
    assert not storage.exists(path)
