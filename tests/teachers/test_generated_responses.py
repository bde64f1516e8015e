"""Generated responses: collected in bulk, scored, stored, and learned from (sequence-level KD)."""

import re

import keras
import numpy as np
import pytest

import keras_distill as kd
from keras_distill._src.labelling import TeacherLabelsError, responses
from keras_distill._src.studies import datasets
from keras_distill._src.studies.architectures import causal_lm
from keras_distill._src.teachers import generation

VOCAB, LENGTH = len(datasets.ADDITION_TOKENS), 12
OPTIONS = dict(vocabulary_size=VOCAB, max_length=LENGTH)


def oracle(answers_by_prompt, wrong_every=0):
    """A teacher that answers correctly (or, every k-th call, adds one), scoring its answers."""
    calls = []

    def generate(prompts):
        calls.append(len(prompts))
        responses = [answers_by_prompt[tuple(np.asarray(p).tolist())] for p in prompts]
        if wrong_every and len(calls) % wrong_every == 0:
            responses = [np.concatenate([[2], r]) for r in responses]  # a leading wrong digit
            return responses, -np.ones(len(prompts))
        return responses, np.zeros(len(prompts))

    generate.calls = calls
    return generate


@pytest.fixture(scope="module")
def problems():
    prompts, answers = datasets.make_addition(40, seed=3)
    return prompts, answers, {tuple(p.tolist()): a for p, a in zip(prompts, answers, strict=True)}


def test_records_hold_prompt_and_response_with_a_mask_of_the_response(problems, tmp_path):
    prompts, answers, table = problems
    manifest = kd.label_with_teacher(
        oracle(table),
        prompts,
        tmp_path,
        output="sequences",
        batch_size=16,
        shard_size=25,
        verbose=0,
        **OPTIONS,
    )
    assert manifest["prompts"] == 40 and manifest["num_examples"] == 40
    assert manifest["response_tokens"] == sum(len(a) for a in answers)
    assert manifest["settings"]["vocabulary_size"] == VOCAB and manifest["scored"] is True
    x, stored = next(iter(kd.load_teacher_labels(tmp_path, batch_size=40)))
    x, tokens = np.asarray(x), np.asarray(stored["teacher_tokens"])
    mask = np.asarray(stored["teacher_response_mask"])
    for i in (0, 17, 39):
        p, a = prompts[i], answers[i]
        assert x[i, : len(p) + len(a)].tolist() == p.tolist() + a.tolist()
        assert tokens[i][mask[i] == 1].tolist() == a.tolist()  # predicted tokens: the response
    assert np.asarray(stored["label_mask"]).sum() == 0


def test_several_scored_samples_weighting_and_best_of_n(problems, tmp_path):
    prompts, _, table = problems
    kd.label_with_teacher(
        oracle(table, wrong_every=2),
        prompts,
        tmp_path,
        output="sequences",
        num_samples=2,
        batch_size=40,
        verbose=0,
        **OPTIONS,
    )
    everything = kd.load_teacher_labels(tmp_path, batch_size=80, score_weighting="softmax")
    _, stored = next(iter(everything))
    scores = np.asarray(stored["teacher_score"]).reshape(40, 2)
    np.testing.assert_array_equal(scores, [[0.0, -1.0]] * 40)  # sample 1 of each prompt: wrong
    expected = 2 * np.exp([0.0, -1.0]) / np.exp([0.0, -1.0]).sum()
    np.testing.assert_allclose(
        np.asarray(stored["teacher_weight"]).reshape(40, 2), [expected] * 40, rtol=1e-5, atol=1e-6
    )
    _, linear = next(
        iter(kd.load_teacher_labels(tmp_path, batch_size=80, score_weighting="linear"))
    )
    np.testing.assert_allclose(np.asarray(linear["teacher_weight"]).reshape(40, 2), [[1, 0]] * 40)
    labelled = tmp_path.parent / (tmp_path.name + "_labelled")
    kd.label_with_teacher(
        oracle(table), prompts, labelled, output="sequences", verbose=0, **OPTIONS
    )
    both = kd.load_teacher_labels(labelled, batch_size=None).concatenate(
        kd.load_teacher_labels(tmp_path, batch_size=None, score_weighting="softmax")
    )
    assert len(list(both)) == 40 + 80  # one answer per prompt and two samples: one dataset
    best = kd.load_teacher_labels(tmp_path, batch_size=80, best_of_n=True)
    assert best.cardinality() == 1
    _, chosen = next(iter(best))
    assert len(chosen["teacher_score"]) == 40 and np.all(np.asarray(chosen["teacher_score"]) == 0)


def test_the_student_learns_the_responses_with_teacher_forcing(problems, tmp_path):
    prompts, _, table = problems
    kd.label_with_teacher(
        oracle(table), prompts, tmp_path, output="sequences", verbose=0, **OPTIONS
    )
    data = kd.load_teacher_labels(tmp_path, batch_size=40, score_weighting="threshold")
    student = causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=0)
    distiller = kd.Distiller(None, student, alpha=0.0)
    distiller.compile(
        keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    logs = distiller.fit(data, epochs=1, verbose=0, shuffle=False).history
    x, stored = next(iter(data))
    log_p = np.asarray(keras.ops.log_softmax(student(x), axis=-1))
    tokens, mask = np.asarray(stored["teacher_tokens"]), np.asarray(stored["teacher_response_mask"])
    nll = -np.take_along_axis(log_p, tokens[..., None], axis=-1)[..., 0]
    assert logs["distillation_loss"][0] == pytest.approx(
        (nll * mask).sum() / mask.sum(), rel=1e-4, abs=1e-6
    )
    distiller.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    trained = distiller.fit(data, epochs=30, verbose=0, shuffle=False).history["distillation_loss"]
    assert trained[-1] < 0.5 * trained[0]


def test_keras_generator_decodes_greedily_and_scores_by_log_probability():
    model = causal_lm(VOCAB, 8, blocks=1, width=16, seed=1)
    responses, scores = generation.keras_generator(model, 3, end_id=None)([[1, 2], [3, 4, 5]])
    tokens = np.zeros((1, 8), "int32")
    tokens[0, :2] = [1, 2]
    log_p = np.asarray(keras.ops.log_softmax(model(tokens), axis=-1))[0]
    assert responses[0][0] == log_p[1].argmax()
    tokens[0, 2] = responses[0][0]
    log_p2 = np.asarray(keras.ops.log_softmax(model(tokens), axis=-1))[0]
    assert responses[0][1] == log_p2[2].argmax()
    assert scores[0] <= log_p[1].max() + log_p2[2].max() + 1e-4 and len(responses[1]) == 3


def test_a_keras_hub_causal_lm_generates_the_responses(tmp_path):
    keras_hub = pytest.importorskip("keras_hub", reason="keras_hub is optional (not installed)")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=LENGTH,
    )
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    generate = generation.keras_hub_generator(lm, max_length=LENGTH)
    prompts, _ = datasets.make_addition(6, seed=5)
    manifest = kd.label_with_teacher(
        generate,
        prompts,
        tmp_path,
        output="sequences",
        teacher_id="gpt2-random",
        verbose=0,
        **OPTIONS,
    )
    longest = max(len(p) for p in prompts)
    assert manifest["prompts"] == 6 and 0 < manifest["longest"] <= LENGTH
    assert manifest["response_tokens"] >= 6 * (LENGTH - longest)


def test_bad_responses_are_refused_naming_the_prompt_and_nothing_is_half_written(
    problems, tmp_path
):
    prompts, answers, _ = problems

    def label(generate, **options):
        return kd.label_with_teacher(
            generate,
            prompts[:8],
            tmp_path / "x",
            output="sequences",
            verbose=0,
            **{**OPTIONS, **options},
        )

    with pytest.raises(TeacherLabelsError, match="returned 7 responses for 8 prompts"):
        label(lambda batch: answers[:7])
    with pytest.raises(
        TeacherLabelsError,
        match=re.escape("response of prompt 3 has tokens outside the vocabulary [0, 14): [99]"),
    ):
        label(lambda batch: [np.array([99]) if i == 3 else a for i, a in enumerate(answers[:8])])
    with pytest.raises(TeacherLabelsError, match="response to prompt 5 is empty"):
        label(
            lambda batch: [
                np.array([], "int32") if i == 5 else a for i, a in enumerate(answers[:8])
            ]
        )
    with pytest.raises(TeacherLabelsError, match="score of a response to prompt 2 is nan"):
        label(lambda batch: (answers[:8], [0, 0, np.nan, 0, 0, 0, 0, 0]))
    with pytest.raises(TeacherLabelsError, match="exceed max_length=12"):
        label(lambda batch: [np.ones(10, "int32")] * 8)
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").glob("*.tfrecord"))
    with pytest.raises(ValueError, match="needs `vocabulary_size` and `max_length`"):
        kd.label_with_teacher(lambda b: b, prompts, tmp_path / "y", output="sequences")
    with pytest.raises(TypeError, match=r"\['num_samples'\] apply to output='sequences' only"):
        kd.label_with_teacher(lambda b: b, np.zeros((4, 2)), tmp_path / "z", num_samples=2)


def test_a_killed_run_resumes_and_another_teacher_is_refused(problems, tmp_path):
    prompts, _, table = problems
    generate = oracle(table)
    original = responses.response_records

    def dying(batch, *args):
        if len(generate.calls) == 3:
            raise KeyboardInterrupt
        return original(batch, *args)

    responses.response_records = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            kd.label_with_teacher(
                generate,
                prompts,
                tmp_path,
                output="sequences",
                batch_size=10,
                shard_size=10,
                teacher_id="oracle",
                verbose=0,
                **OPTIONS,
            )
    finally:
        responses.response_records = original
    manifest = kd.label_with_teacher(
        generate,
        prompts,
        tmp_path,
        output="sequences",
        batch_size=10,
        shard_size=10,
        teacher_id="oracle",
        verbose=0,
        **OPTIONS,
    )
    assert len(generate.calls) == 3 + 2 and manifest["num_examples"] == 40
    with pytest.raises(TeacherLabelsError, match="other teacher"):
        kd.label_with_teacher(
            generate,
            prompts,
            tmp_path,
            output="sequences",
            batch_size=10,
            shard_size=10,
            teacher_id="oracle-v2",
            verbose=0,
            **OPTIONS,
        )


def test_a_keras_generator_names_its_weights_so_another_model_is_refused(tmp_path):
    prompts, _ = datasets.make_addition(4, seed=9)
    first = generation.keras_generator(causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=1), 3)
    other = generation.keras_generator(causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=2), 3)
    assert first.teacher_id != other.teacher_id
    kd.label_with_teacher(first, prompts, tmp_path, output="sequences", verbose=0, **OPTIONS)
    with pytest.raises(TeacherLabelsError, match="other teacher"):
        kd.label_with_teacher(other, prompts, tmp_path, output="sequences", verbose=0, **OPTIONS)


def test_the_teachers_top_k_per_token_is_stored_and_matched_beside_its_tokens(tmp_path):
    prompts, _ = datasets.make_addition(16, seed=11)
    teacher = causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=3)
    generate = generation.keras_generator(teacher, 3, top_k=4)
    manifest = kd.label_with_teacher(
        generate, prompts, tmp_path, output="sequences", verbose=0, **OPTIONS
    )
    assert manifest["response_top_k"] == 4
    x, stored = next(iter(kd.load_teacher_labels(tmp_path, batch_size=16)))
    mask = np.asarray(stored["teacher_response_mask"])
    values, indices = (
        np.asarray(stored["teacher_topk_values"]),
        np.asarray(stored["teacher_topk_indices"]),
    )
    t_log_p = np.asarray(keras.ops.log_softmax(teacher(x), axis=-1))
    row, position = 0, int(np.nonzero(mask[0])[0][0])
    np.testing.assert_allclose(
        values[row, position], np.sort(t_log_p[row, position])[::-1][:4], atol=1e-5
    )
    student = causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=4)
    distiller = kd.Distiller(None, student, alpha=0.0, temperature=1.0)
    distiller.compile(
        keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    logs = distiller.fit(
        kd.load_teacher_labels(tmp_path, batch_size=16), epochs=1, verbose=0, shuffle=False
    ).history
    s_p = np.asarray(keras.ops.softmax(student(x), axis=-1), "float64")
    tokens = np.asarray(stored["teacher_tokens"])
    nll = -np.log(np.take_along_axis(s_p, tokens[..., None], axis=-1)[..., 0])
    t_buckets = np.exp(values.astype("float64"))
    t_buckets = np.concatenate([t_buckets, 1 - t_buckets.sum(-1, keepdims=True)], -1)
    s_top = np.take_along_axis(s_p, indices, axis=-1)
    s_buckets = np.concatenate([s_top, 1 - s_top.sum(-1, keepdims=True)], -1)
    with np.errstate(invalid="ignore"):  # positions outside the responses have no top-k
        kl = np.sum(t_buckets * (np.log(np.maximum(t_buckets, 1e-12)) - np.log(s_buckets)), -1)
    expected = np.where(mask == 1, nll + kl, 0.0).sum() / mask.sum()  # elsewhere: no top-k
    assert logs["distillation_loss"][0] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    with pytest.raises(TeacherLabelsError, match="top-k outputs of the response to prompt 0"):
        kd.label_with_teacher(
            lambda b: {
                "responses": [np.array([3])] * len(b),
                "top_k": [(np.zeros((2, 4)), np.zeros((2, 4), "int32"))] * len(b),
            },
            prompts,
            tmp_path / "bad",
            output="sequences",
            verbose=0,
            **OPTIONS,
        )


def test_string_prompts_with_a_tokenizer_a_grader_and_a_weighting_function(tmp_path):
    def tokenizer(text):
        return [datasets.ADDITION_TOKENS.index(c) for c in text]

    prompts = ["12+3=", "4+4="]
    graded = []

    def grader(prompt, response):
        graded.append((prompt, response))
        return float(eval(prompt[:-1]) == int(response))  # noqa: S307  (our own prompts)

    manifest = kd.label_with_teacher(
        lambda batch: ["15", "9"],
        prompts,
        tmp_path,
        output="sequences",
        tokenizer=tokenizer,
        score=grader,
        teacher_id="strings",
        verbose=0,
        **OPTIONS,
    )
    assert graded == [("12+3=", "15"), ("4+4=", "9")] and manifest["score_range"] == [0.0, 1.0]
    x, stored = next(
        iter(
            kd.load_teacher_labels(
                tmp_path, batch_size=2, score_weighting=lambda s, g: 3.0 * s + 1.0
            )
        )
    )
    assert datasets.addition_text(np.asarray(x)[0]) == "12+3=15"
    np.testing.assert_allclose(stored["teacher_weight"], [4.0, 1.0])
    with pytest.raises(TeacherLabelsError, match="other data"):
        kd.label_with_teacher(
            lambda batch: ["15", "9"],
            ["1+1=", "4+4="],
            tmp_path,
            output="sequences",
            tokenizer=tokenizer,
            teacher_id="strings",
            verbose=0,
            **OPTIONS,
        )


def test_a_student_vocabulary_smaller_than_the_stored_responses_is_refused_first(
    problems, tmp_path
):
    prompts, _, table = problems
    kd.labelling.label_responses(
        oracle(table), prompts, tmp_path, options=kd.labelling.SequenceOptions(**OPTIONS), verbose=0
    )
    data = kd.load_teacher_labels(tmp_path, batch_size=40)
    student = causal_lm(VOCAB - 3, LENGTH, blocks=1, width=16, seed=0)
    weights = [np.array(w) for w in student.get_weights()]
    distiller = kd.Distiller(None, student, alpha=0.0)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(kd.teachers.TeacherOutputError, match=f"{VOCAB}"):
        distiller.fit(data, epochs=1, verbose=0)
    for before, after in zip(weights, student.get_weights()):
        np.testing.assert_array_equal(before, after)
