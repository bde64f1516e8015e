"""Bulk teacher labelling on Apache Beam (DirectRunner, two worker processes)."""

import json

import numpy as np
import pytest

import keras_distill as kd
from keras_distill._src.labelling import TeacherLabelsError
from keras_distill._src.teachers.outputs import TeacherOutputError

beam = pytest.importorskip("apache_beam", reason="apache-beam is optional (keras-distill[beam])")
kbeam = pytest.importorskip("keras_distill.labelling.beam")
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

TWO_WORKERS = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_processing")


def loaded(path):
    return list(kd.load_teacher_labels(path, batch_size=None).as_numpy_iterator())


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


@pytest.mark.slow  # worker processes
@pytest.mark.parametrize("kind", ["logits", "top_k", "scores", "probabilities", "labels"])
def test_two_beam_workers_write_what_the_local_path_writes(digits, teacher, tmp_path, kind):
    x, y = digits.x_train, digits.y_train  # 1,347 examples
    options = {
        "logits": {},
        "top_k": {"top_k": 3},
        "scores": {"output": "scores"},
        "probabilities": {"output": "probabilities"},
        "labels": {"output": "labels"},
    }[kind]

    def scorer(batch):  # a black box that rates examples and says how sure it is (defined here:
        return batch[:, :2].sum(-1), np.full(len(batch), 0.5, "float32")  # pickled by value)

    def probabilities(batch):
        logits = batch[:, :10] - batch[:, :10].max(-1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)

    def labels(batch):
        return np.argmax(batch[:, :10], axis=-1)

    model = {"scores": scorer, "probabilities": probabilities, "labels": labels}.get(kind, teacher)
    local, on_beam = tmp_path / "local", tmp_path / "beam"
    kd.label_with_teacher(model, (x, y), local, shard_size=500, verbose=0, **options)
    result = kbeam.label(
        model, (x, y), on_beam, shard_size=500, pipeline_options=TWO_WORKERS, **options
    )
    assert result["complete"] and result["num_examples"] == len(x)
    assert [s["sha256"] for s in result["shards"]] == [
        s["sha256"] for s in manifest(local)["shards"]
    ]  # the same bytes
    for (xa, ta), (xb, tb) in zip(loaded(local), loaded(on_beam), strict=True):
        np.testing.assert_array_equal(xa, xb)
        assert sorted(ta) == sorted(tb)
        for key in ta:
            np.testing.assert_array_equal(ta[key], tb[key])


@pytest.mark.slow  # worker processes
def test_the_output_does_not_depend_on_parallelism_or_order(digits, tmp_path):
    x = digits.x_train[:700]
    one, two = tmp_path / "one", tmp_path / "two"
    kbeam.label(lambda b: b[:, :5], x, one, shard_size=200)
    with beam.Pipeline(options=TWO_WORKERS) as pipeline:  # the transform itself, shuffled input
        order = np.random.default_rng(0).permutation(len(x))
        _ = (
            pipeline
            | beam.Create([(int(i), x[i]) for i in order])
            | kbeam.LabelWithTeacher(
                kbeam.CallableModelHandler(lambda b: b[:, :5]),
                two,
                kbeam.label_settings("id:t", "logits", None, 200),
            )
        )
    shards_of = [[s["sha256"] for s in manifest(p)["shards"]] for p in (one, two)]
    assert shards_of[0] == shards_of[1] and len(shards_of[0]) == 4


def test_a_failing_teacher_fails_the_pipeline_and_leaves_no_complete_manifest(digits, tmp_path):
    x = digits.x_train[:300]

    def flaky(batch):  # fails on the batch that holds example 150
        if np.any(np.all(batch == x[150], axis=1)):
            raise RuntimeError("the teacher API answered 503")
        return batch[:, :4]

    with pytest.raises(Exception, match="the teacher API answered 503"):
        kbeam.label(flaky, x, tmp_path, shard_size=100)
    assert not (tmp_path / "manifest.json").exists()
    rerun = kbeam.label(lambda b: b[:, :4], x, tmp_path, shard_size=100)  # rewrites the shards
    assert rerun["complete"] and rerun["num_examples"] == 300
    with pytest.raises(TeacherLabelsError, match="already holds a complete labelling run"):
        kbeam.label(lambda b: b[:, :4], x, tmp_path, shard_size=100)
    with pytest.raises(TeacherOutputError, match="NaN or infinite"):
        kbeam.label(lambda b: np.full((len(b), 3), np.nan), x, tmp_path / "nan", shard_size=100)
    assert not (tmp_path / "nan" / "manifest.json").exists()


@pytest.mark.slow  # worker processes
def test_generated_responses_on_two_workers_equal_the_local_run(tmp_path):
    from keras_distill._src.studies import datasets

    prompts, answers = datasets.make_addition(90, seed=2)
    table = {tuple(p.tolist()): a for p, a in zip(prompts, answers, strict=True)}

    def generate(batch):  # two scored samples per prompt: the answer, then a wrong one
        generate.calls = getattr(generate, "calls", 0) + 1
        responses = [table[tuple(p.tolist())] for p in batch]
        if generate.calls % 2 == 0:
            return [np.concatenate([[2], r]) for r in responses], -np.ones(len(batch))
        return responses, np.zeros(len(batch))

    options = dict(
        output="sequences",
        vocabulary_size=len(datasets.ADDITION_TOKENS),
        max_length=12,
        num_samples=2,
        teacher_id="oracle",
    )
    local = kd.label_with_teacher(
        generate, prompts, tmp_path / "local", batch_size=64, shard_size=40, verbose=0, **options
    )
    generate.calls = 0
    on_beam = kbeam.label(
        generate, prompts, tmp_path / "beam", shard_size=40, pipeline_options=TWO_WORKERS, **options
    )
    for key in ("prompts", "num_examples", "response_tokens", "longest", "score_range", "scored"):
        assert on_beam[key] == local[key], key
    best = [
        kd.load_teacher_labels(tmp_path / p, batch_size=None, best_of_n=True)
        for p in ("local", "beam")
    ]
    for (xa, ta), (xb, tb) in zip(*(b.as_numpy_iterator() for b in best), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta["teacher_tokens"], tb["teacher_tokens"])


@pytest.mark.slow  # worker processes
def test_shard_chunks_in_any_order_on_two_workers_write_the_same_bytes(digits, tmp_path):
    x, y = digits.x_train[:900], digits.y_train[:900]
    kbeam.label(lambda b: b[:, :5], (x, y), tmp_path / "one", shard_size=200)
    chunks = kbeam.shard_chunks(x, y, 200)[::-1]  # the last shard first
    assert [len(c.x) for c in chunks] == [100, 200, 200, 200, 200]
    with beam.Pipeline(options=TWO_WORKERS) as pipeline:
        _ = (
            pipeline
            | beam.Create(chunks)
            | kbeam.LabelShardChunks(
                kbeam.CallableModelHandler(lambda b: b[:, :5]),
                str(tmp_path / "two"),
                kbeam.label_settings("id:t", "logits", None, 200),
            )
        )
    shards_of = [[s["sha256"] for s in manifest(tmp_path / p)["shards"]] for p in ("one", "two")]
    assert shards_of[0] == shards_of[1] and len(shards_of[0]) == 5
    for (xa, ta), (xb, tb) in zip(loaded(tmp_path / "one"), loaded(tmp_path / "two"), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta["labels"], tb["labels"])


def test_the_teacher_sees_whole_shards_in_slices_of_256_rows(digits, tmp_path):
    sizes = tmp_path / "sizes.txt"

    def recording(batch):  # pickled to the worker: it writes what it saw to a file
        with open(sizes, "a") as file:
            file.write(f"{len(batch)}\n")
        return batch[:, :3]

    kbeam.label(recording, digits.x_train[:1100], tmp_path / "out", shard_size=500)
    seen = sorted(int(line) for line in sizes.read_text().split())
    assert seen == [8, 100, 244, 244, 256, 256]  # the driver's probe (8), then 500, 500, 100


def test_chunks_that_leave_a_gap_fail_the_pipeline_and_leave_no_manifest(digits, tmp_path):
    x = digits.x_train[:600]
    chunks = [c for c in kbeam.shard_chunks(x, None, 200) if c.shard != 1]
    with pytest.raises(Exception, match="without gaps or repeats"):
        with beam.Pipeline() as pipeline:
            _ = (
                pipeline
                | beam.Create(chunks)
                | kbeam.LabelShardChunks(
                    kbeam.CallableModelHandler(lambda b: b[:, :3]),
                    str(tmp_path),
                    kbeam.label_settings("id:t", "logits", None, 200),
                )
            )
    assert not (tmp_path / "manifest.json").exists()
