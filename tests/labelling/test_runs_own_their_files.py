"""A labelling run never replaces another run's files; arguments are checked where they enter."""

import json

import numpy as np
import pytest

from keras_distill.labelling import TeacherLabelsError, label_with_teacher, load_teacher_labels

RNG = np.random.default_rng(0)
X = RNG.random((90, 6)).astype("float32")


def teacher(batch):
    return np.tanh(batch[:, :4] * 2.0)


def label_part(folder, index, count, **kwargs):
    return label_with_teacher(
        teacher,
        X,
        folder,
        shard_size=10,
        worker_index=index,
        num_workers=count,
        verbose=0,
        **{"teacher_id": "a", **kwargs},
    )


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_part_of_another_split_never_replaces_a_finished_runs_shards(tmp_path, overwrite):
    label_part(tmp_path, 1, 3)
    listed = json.loads((tmp_path / "manifest-part-00001-of-00003.json").read_text())["shards"]
    assert listed[0]["file"] == "part-00001-shard-00000.tfrecord"  # the name part 1 of 2 writes
    before = snapshot(tmp_path)
    with pytest.raises(
        TeacherLabelsError,
        match=r"manifest-part-00001-of-00003.json \(part 1 of 3\), another run's; this is part 1 "
        r"of 2, whose files would replace part-00001-shard-00000.tfrecord.*never replaced",
    ):
        label_part(tmp_path, 1, 2, overwrite=overwrite)
    assert snapshot(tmp_path) == before


def test_a_part_beside_a_single_part_run_is_refused_even_with_overwrite(tmp_path):
    label_with_teacher(teacher, X, tmp_path, teacher_id="a", verbose=0)
    before = snapshot(tmp_path)
    with pytest.raises(TeacherLabelsError, match=r"holds manifest.json \(a run in one part\)"):
        label_part(tmp_path, 0, 2, overwrite=True)
    assert snapshot(tmp_path) == before


def test_a_part_of_another_teacher_is_refused_when_written_naming_both(tmp_path):
    label_part(tmp_path, 0, 2)
    before = snapshot(tmp_path)
    with pytest.raises(
        TeacherLabelsError,
        match=r"manifest-part-00000-of-00002.json \(part 0 of 2\), made with other teacher "
        r"\(that part: \{'teacher': 'id:a'\}; this is part 1 of 2: \{'teacher': 'id:b'\}\)",
    ):
        label_part(tmp_path, 1, 2, teacher_id="b")
    assert snapshot(tmp_path) == before
    label_part(tmp_path, 1, 2)  # the same run's other part is welcome
    assert len(list(load_teacher_labels(tmp_path, batch_size=None))) == len(X)


def test_loading_parts_of_two_teachers_names_the_teacher(tmp_path):
    label_part(tmp_path, 0, 2)
    label_part(tmp_path, 1, 2, teacher_id="b", overwrite=True)  # asked for: every part relabelled
    with pytest.raises(TeacherLabelsError, match=r"differ in teacher \(\{'teacher': 'id:a'\}"):
        load_teacher_labels(tmp_path)


def stored_order(folder, **kwargs):
    return np.stack([x.numpy() for x, _ in load_teacher_labels(folder, batch_size=None, **kwargs)])


def test_shuffle_true_shuffles_as_fit_does_and_false_keeps_the_order(tmp_path):
    label_with_teacher(teacher, X, tmp_path, verbose=0)
    np.testing.assert_array_equal(stored_order(tmp_path, shuffle=False), X)
    np.testing.assert_array_equal(stored_order(tmp_path, shuffle=None), X)
    shuffled = stored_order(tmp_path, shuffle=True, seed=1)
    assert not np.array_equal(shuffled, X)
    np.testing.assert_array_equal(np.sort(shuffled[:, 0]), np.sort(X[:, 0]))


@pytest.mark.parametrize(
    "argument, value",
    [
        ("shuffle", "yes"),
        ("shuffle", -5),
        ("shuffle", 2.5),
        ("shuffle", 0),
        ("batch_size", 0),
        ("batch_size", 2.5),
        ("seed", "1"),
        ("cache", "yes"),
        ("verify", "no"),
        ("allow_incomplete", 1),
        ("best_of_n", None),
    ],
)
def test_loading_arguments_of_the_wrong_type_or_range_are_named(tmp_path, argument, value):
    label_with_teacher(teacher, X, tmp_path, verbose=0)
    with pytest.raises(ValueError, match=rf"`{argument}` must be .*received {value!r}"):
        load_teacher_labels(tmp_path, **{argument: value})


@pytest.mark.parametrize(
    "argument, value",
    [
        ("shard_size", 2.5),
        ("batch_size", "8"),
        ("top_k", 0),
        ("worker_index", 1.5),
        ("worker_index", -1),
        ("num_workers", 0),
        ("teacher_id", 3),
        ("overwrite", "yes"),
    ],
)
def test_labelling_arguments_of_the_wrong_type_or_range_are_named(tmp_path, argument, value):
    folder = tmp_path / "labels"
    with pytest.raises(ValueError, match=rf"`{argument}` must be .*received {value!r}"):
        label_with_teacher(teacher, X, folder, verbose=0, **{argument: value})
    assert not folder.exists()
