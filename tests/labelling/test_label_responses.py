"""label_responses: a generating teacher's responses, in one part or in parts of several workers."""

import json

import numpy as np
import pytest

from keras_distill.labelling import (
    SequenceOptions,
    TeacherLabelsError,
    label_responses,
    label_with_teacher,
    load_teacher_labels,
)
from keras_distill.teachers import TeacherOutputError

OPTIONS = SequenceOptions(vocabulary_size=16, max_length=10, num_samples=2)
PROMPTS = [[1 + i % 5, 2 + i % 7, 3] for i in range(9)]


def recording_teacher(seen):
    """Answers a prompt with its tokens reversed; scores spread with the prompt index."""

    def generate(batch):
        seen.extend(tuple(prompt) for prompt in batch)
        responses = [list(prompt)[::-1] for prompt in batch]
        scores = [-float(sum(prompt)) for prompt in batch]
        return responses, scores

    return generate


def label(folder, seen, **kwargs):
    return label_responses(
        recording_teacher(seen),
        PROMPTS,
        folder,
        options=OPTIONS,
        batch_size=2,
        shard_size=4,
        teacher_id="reverse",
        verbose=0,
        **kwargs,
    )


def loaded(folder, **kwargs):
    xs, targets = [], {}
    for x, target in load_teacher_labels(folder, batch_size=None, **kwargs):
        xs.append(x.numpy())
        for key, value in target.items():
            targets.setdefault(key, []).append(value.numpy())
    return np.stack(xs), {key: np.stack(values) for key, values in targets.items()}


def test_two_workers_label_their_parts_and_load_together_as_the_single_run(tmp_path):
    single_seen, part_seen = [], [[], []]
    label(tmp_path / "single", single_seen)
    for index in (0, 1):
        manifest = label(tmp_path / "parts", part_seen[index], worker_index=index, num_workers=2)
        assert manifest["complete"] and manifest["settings"]["num_workers"] == 2
    assert sorted(p.name for p in (tmp_path / "parts").glob("manifest*")) == [
        "manifest-part-00000-of-00002.json",
        "manifest-part-00001-of-00002.json",
    ]
    # each worker asked its own part of the prompts, twice (num_samples=2)
    assert part_seen[0] == [tuple(p) for p in PROMPTS[:2] * 2 + PROMPTS[2:4] * 2]
    assert set(part_seen[1]) == {tuple(p) for p in PROMPTS[4:]}
    assert len(part_seen[0]) + len(part_seen[1]) == len(single_seen) == 2 * len(PROMPTS)
    for weighting in (None, "linear", "threshold"):
        x_single, single = loaded(tmp_path / "single", score_weighting=weighting)
        x_parts, parts = loaded(tmp_path / "parts", score_weighting=weighting)
        np.testing.assert_array_equal(x_parts, x_single)
        assert sorted(parts) == sorted(single)
        for key in single:
            np.testing.assert_allclose(parts[key], single[key], rtol=0, atol=1e-6, err_msg=key)
    assert len(loaded(tmp_path / "parts", best_of_n=True)[0]) == len(PROMPTS)


def test_tf_config_gives_the_worker_its_part(tmp_path, monkeypatch):
    cluster = {"worker": ["10.0.0.1:1", "10.0.0.2:1"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    seen = []
    manifest = label(tmp_path, seen)
    assert manifest["worker_index"] == 1 and manifest["num_examples"] == 2 * 5
    assert set(seen) == {tuple(p) for p in PROMPTS[4:]}
    assert (tmp_path / "manifest-part-00001-of-00002.json").exists()


def test_the_deprecated_output_sequences_warns_and_writes_what_label_responses_writes(tmp_path):
    label(tmp_path / "new", [])
    with pytest.warns(DeprecationWarning, match=r"use kd.labelling.label_responses"):
        label_with_teacher(
            recording_teacher([]),
            PROMPTS,
            tmp_path / "old",
            output="sequences",
            batch_size=2,
            shard_size=4,
            teacher_id="reverse",
            verbose=0,
            vocabulary_size=16,
            max_length=10,
            num_samples=2,
        )
    new, old = tmp_path / "new", tmp_path / "old"
    assert sorted(p.name for p in old.iterdir()) == sorted(p.name for p in new.iterdir())
    for path in new.iterdir():
        assert (old / path.name).read_bytes() == path.read_bytes(), path.name


def test_options_must_be_sequence_options(tmp_path):
    with pytest.raises(TypeError, match=r"`options` must be a kd.labelling.SequenceOptions"):
        label_responses(recording_teacher([]), PROMPTS, tmp_path, options={"max_length": 10})


def test_a_worker_without_prompts_is_refused_and_writes_nothing(tmp_path):
    folder = tmp_path / "labels"
    with pytest.raises(TeacherLabelsError, match=r"Worker 0 of 4 has no prompt to label"):
        label_responses(
            recording_teacher([]),
            PROMPTS[:3],
            folder,
            options=OPTIONS,
            worker_index=0,
            num_workers=4,
        )
    assert not folder.exists()


@pytest.mark.parametrize(
    "value, message",
    [
        (np.nan, r"NaN or infinite values for the top-k outputs of prompts \[3\]"),
        (0.5, r"top-k values of the teacher 'generate' are not log-probabilities"),
    ],
)
def test_top_k_outputs_that_are_not_log_probabilities_are_refused_before_writing(
    tmp_path, value, message
):
    def generate(batch):
        responses = [list(prompt)[::-1] for prompt in batch]
        top_k = []
        for prompt, response in zip(batch, responses, strict=True):
            values = np.log(np.full((len(response), 2), 0.25))
            if prompt == PROMPTS[3]:
                values[1, 0] = value
            top_k.append((values, np.tile([1, 2], (len(response), 1))))
        return {"responses": responses, "top_k": top_k}

    folder = tmp_path / "labels"
    with pytest.raises(TeacherOutputError, match=message):
        label_responses(generate, PROMPTS, folder, options=OPTIONS, batch_size=2, verbose=0)
    assert not list(folder.glob("*.tfrecord"))
