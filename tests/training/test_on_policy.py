"""On-policy distillation (GKD): the per-token JSD, cached decoding, `OnPolicyDistiller`."""

import keras
import numpy as np
import pytest

from keras_distill._src.losses import token_divergences
from keras_distill._src.studies.architectures import causal_lm
from keras_distill._src.teachers import cached_decoding
from keras_distill._src.teachers.outputs import TeacherOutputError
from keras_distill._src.training.on_policy import OnPolicyDistiller

keras_hub = pytest.importorskip("keras_hub", reason="keras_hub is optional (not installed)")

VOCAB, LENGTH = 7, 10


# -- a float64 NumPy reference -------------------------------------------------------


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_kl(p_log, q_log):
    return (np.exp(p_log) * (p_log - q_log)).sum(-1)


def np_jsd(teacher_log, student_log, beta):
    if beta == 0:
        return np_kl(teacher_log, student_log)
    if beta == 1:
        return np_kl(student_log, teacher_log)
    mixture = np.log(beta * np.exp(teacher_log) + (1 - beta) * np.exp(student_log))
    return beta * np_kl(teacher_log, mixture) + (1 - beta) * np_kl(student_log, mixture)


def np_top_k_buckets(values, ids, student_log):
    student_top = np.take_along_axis(student_log, ids, -1)
    teacher_rest = np.log(1 - np.exp(values).sum(-1, keepdims=True))
    student_rest = np.log(1 - np.exp(student_top).sum(-1, keepdims=True))
    return (
        np.concatenate([values, teacher_rest], -1),
        np.concatenate([student_top, student_rest], -1),
    )


def random_logits(seed, shape=(3, 4, VOCAB), scale=2.0):
    return np.random.default_rng(seed).normal(size=shape) * scale


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_full_jsd_matches_the_float64_reference(beta, temperature):
    teacher_log = np_log_softmax(random_logits(0))
    student_logits = random_logits(1)
    got = token_divergences.token_divergence(teacher_log, student_logits, beta, temperature)
    want = np_jsd(
        np_log_softmax(teacher_log / temperature),
        np_log_softmax(student_logits / temperature),
        beta,
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
    assert (want > 1e-3).all()  # a real difference is measured


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_top_k_with_remaining_mass_matches_the_float64_reference(beta):
    teacher_log = np_log_softmax(random_logits(2))
    ids = np.argsort(-teacher_log, -1)[..., :3]
    values = np.take_along_axis(teacher_log, ids, -1)
    student_logits = random_logits(3)
    got = token_divergences.token_divergence((values, ids), student_logits, beta)
    teacher_buckets, student_buckets = np_top_k_buckets(values, ids, np_log_softmax(student_logits))
    want = np_jsd(teacher_buckets, student_buckets, beta)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
    full = np_jsd(teacher_log, np_log_softmax(student_logits), beta)
    assert (want <= full + 1e-9).all()  # merging tokens never increases an f-divergence


def test_jsd_is_zero_for_equal_distributions_and_a_variable_beta_selects_the_ends():
    logits = random_logits(4)
    same = token_divergences.token_divergence(np_log_softmax(logits), logits, keras.Variable(0.3))
    np.testing.assert_allclose(np.asarray(same), 0.0, atol=1e-5)
    teacher_log = np_log_softmax(random_logits(5))
    for beta in (0.0, 1.0):
        got = token_divergences.token_divergence(teacher_log, logits, keras.Variable(beta))
        want = np_jsd(teacher_log, np_log_softmax(logits), beta)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)


def test_the_mean_is_per_response_then_over_responses_and_masked_positions_do_not_count():
    per_token = np.array([[1.0, 3.0, 100.0], [5.0, 7.0, 9.0], [8.0, 8.0, 8.0]])
    mask = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0]], "float32")
    # (1 + 3) / 2 and 9 / 1; the third row has no response token and is left out
    assert float(token_divergences.masked_sequence_mean(per_token, mask)) == pytest.approx(
        (2.0 + 9.0) / 2
    )


def test_check_beta_names_the_bad_value():
    with pytest.raises(ValueError, match=r"beta=1\.5"):
        token_divergences.check_beta(1.5)


# -- decoding ---------------------------------------------------------------------------


def gpt2(seed, width=16, length=LENGTH):
    return cached_decoding.small_gpt2_lm(VOCAB, length, blocks=2, width=width, heads=2, seed=seed)


def prompts():
    return np.array([[1, 2, 3], [4, 5, 0], [6, 0, 0], [2, 2, 2]], "int32")


def test_cached_and_uncached_greedy_decodings_give_the_same_tokens():
    lm = gpt2(0, length=24)
    cached = cached_decoding.TokenDecoder(lm, 20, use_cache=True)(prompts())
    uncached = cached_decoding.TokenDecoder(lm, 20, use_cache=False)(prompts())
    np.testing.assert_array_equal(cached.tokens, uncached.tokens)
    is_prompt = prompts() != 0
    np.testing.assert_array_equal(cached.tokens[:, :3][is_prompt], prompts()[is_prompt])
    assert [len(r) for r in cached.responses()] == [20] * 4
    assert len(set(map(tuple, cached.tokens[:, 3:].tolist()))) > 1  # not one constant answer


def test_greedy_decoding_follows_the_argmax_and_stops_at_the_end_token():
    lm = causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=3)
    decoded = cached_decoding.TokenDecoder(lm, 4, end_id=6)(prompts()[:1])
    tokens = decoded.tokens[0]
    logits = np.asarray(lm(np.pad(tokens, (0, LENGTH - len(tokens)))[None]))[0]
    for t in range(3, 3 + int(decoded.response_mask.sum())):
        assert tokens[t] == logits[t - 1].argmax()
    response = decoded.responses()[0]
    assert 6 not in response[:-1] and (len(response) == 4 or response[-1] == 6)


def test_a_decoder_refuses_prompts_longer_than_the_context():
    with pytest.raises(ValueError, match=r"more than the model's context of 10"):
        cached_decoding.TokenDecoder(gpt2(0), 8)(prompts())


# -- the distiller --------------------------------------------------------------------


def uniform_teacher(tokens):
    return np.full((*tokens.shape, VOCAB), -np.log(VOCAB))


def fit_logs(distiller, epochs=1, y=None, **kwargs):
    distiller.compile(keras.optimizers.Adam(1e-2))
    x = np.tile(prompts(), (4, 1))
    y = None if y is None else np.tile(y, (4, 1))
    return distiller.fit(x, y, batch_size=4, epochs=epochs, verbose=0, **kwargs).history


def references():
    return np.array([[4, 5, 6], [1, 6, 0], [2, 3, 6], [6, 0, 0]], "int32")


@pytest.mark.parametrize("lmbda", [0.0, 0.5, 1.0])
def test_the_on_policy_fraction_follows_lmbda_and_the_seed(lmbda):
    distiller = OnPolicyDistiller(
        uniform_teacher, gpt2(1), lmbda=lmbda, max_new_tokens=3, end_id=6, seed=4
    )
    history = fit_logs(distiller, epochs=2, y=references())
    draws = np.random.default_rng(4).random(8) < lmbda  # 4 batches per epoch
    assert history["on_policy_fraction"] == [draws[:4].mean(), draws[4:].mean()]
    assert history["lmbda"] == [lmbda, lmbda]
    assert distiller.teacher_forward_passes == 8  # one scoring pass per batch
    lengths = history["response_length"]
    assert all(1.0 <= n <= 3.0 for n in lengths)


def test_off_policy_batches_use_the_references_and_their_length():
    distiller = OnPolicyDistiller(uniform_teacher, gpt2(1), lmbda=0.0, max_new_tokens=3, end_id=6)
    history = fit_logs(distiller, y=references())
    assert history["response_length"] == [pytest.approx((3 + 2 + 3 + 1) / 4)]


def test_distillation_moves_the_student_towards_a_keras_teacher():
    teacher = causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=5, name="teacher")
    student = causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=6, name="student")
    before = [w.copy() for w in teacher.get_weights()]
    distiller = OnPolicyDistiller(teacher, student, lmbda=0.5, beta=0.5, max_new_tokens=4, seed=0)
    history = fit_logs(distiller, epochs=4)
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    for old, new in zip(before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # the teacher is never trained
    assert len(distiller.weights) == len(student.weights) + 3  # lmbda, beta, temperature


def test_a_keras_teacher_ending_in_a_softmax_teaches_as_its_logits():
    logits_teacher = causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=5, name="teacher")
    softmax = keras.layers.Softmax()(logits_teacher.outputs[0])
    softmax_teacher = keras.Model(logits_teacher.inputs, softmax)
    logs = [
        fit_logs(
            OnPolicyDistiller(
                t,
                causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=6),
                lmbda=0.0,
                max_new_tokens=3,
                seed=0,
            )
        )
        for t in (logits_teacher, softmax_teacher)
    ]
    assert logs[1]["loss"] == pytest.approx(logs[0]["loss"], rel=1e-4, abs=1e-6)
    assert logs[0]["loss"][0] > 0.01


def test_a_keras_hub_student_learns_from_a_top_k_teacher_callable():
    teacher = gpt2(7)

    def top_2(tokens):
        log_probs = np.asarray(keras.ops.log_softmax(cached_decoding.lm_logits(teacher, tokens)))
        ids = np.argsort(-log_probs, -1)[..., :2]
        return np.take_along_axis(log_probs, ids, -1), ids

    distiller = OnPolicyDistiller(top_2, gpt2(8), lmbda=1.0, beta=1.0, max_new_tokens=4, seed=0)
    history = fit_logs(distiller, epochs=3)
    assert history["on_policy_fraction"] == [1.0, 1.0, 1.0]
    assert history["loss"][-1] < history["loss"][0]


class Schedule(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.model.lmbda = [0.0, 1.0][epoch]
        self.model.beta = [0.25, 0.75][epoch]


def test_a_callback_schedules_lmbda_and_beta_and_the_logs_show_them():
    distiller = OnPolicyDistiller(uniform_teacher, gpt2(1), max_new_tokens=3, seed=0)
    history = fit_logs(distiller, epochs=2, y=references(), callbacks=[Schedule()])
    assert history["lmbda"] == [0.0, 1.0]
    assert history["beta"] == [0.25, 0.75]
    assert history["on_policy_fraction"] == [0.0, 1.0]


def test_the_config_holds_the_student_and_settings_never_the_teacher():
    student = gpt2(1)
    distiller = OnPolicyDistiller(gpt2(2), student, lmbda=0.25, beta=0.75, max_new_tokens=3)
    config = distiller.get_config()
    assert "teacher" not in config and config["lmbda"] == 0.25
    loaded = OnPolicyDistiller.from_config(config)
    assert loaded.teacher is None and float(loaded.beta) == 0.75
    with pytest.raises(ValueError, match="no teacher"):
        loaded.fit(prompts())
    ids = np.ones((1, LENGTH), "int32")
    logits = loaded.student.predict_on_batch({"token_ids": ids, "padding_mask": ids})
    assert np.asarray(logits).shape == (1, LENGTH, VOCAB)


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"lmbda": 1.5}, r"lmbda=1\.5"),
        ({"lmbda": -0.1}, r"lmbda=-0\.1"),
        ({"beta": 2.0}, r"beta=2\.0"),
        ({"temperature": 0.0}, r"temperature.*0\.0"),
        ({"max_new_tokens": 0}, r"max_new_tokens.*0"),
    ],
)
def test_bad_settings_are_refused_at_construction(setting, message):
    with pytest.raises(ValueError, match=message):
        OnPolicyDistiller(uniform_teacher, gpt2(1), **setting)


def test_a_scheduled_value_out_of_range_is_refused_by_the_setter():
    distiller = OnPolicyDistiller(uniform_teacher, gpt2(1))
    with pytest.raises(ValueError, match=r"lmbda=1\.2"):
        distiller.lmbda = 1.2


def test_a_teacher_with_another_vocabulary_is_refused_at_construction():
    teacher = cached_decoding.small_gpt2_lm(VOCAB + 3, LENGTH, blocks=1, width=8, heads=2)
    with pytest.raises(ValueError, match=r"teacher's vocabulary has 10 tokens and the student's 7"):
        OnPolicyDistiller(teacher, gpt2(1))
    uniform_teacher.vocabulary_size = VOCAB + 1
    try:
        with pytest.raises(ValueError, match=r"has 8 tokens"):
            OnPolicyDistiller(uniform_teacher, gpt2(1))
    finally:
        del uniform_teacher.vocabulary_size


def test_prompts_longer_than_the_context_are_refused_before_training():
    distiller = OnPolicyDistiller(uniform_teacher, gpt2(1), lmbda=1.0, max_new_tokens=8)
    distiller.compile("adam")
    with pytest.raises(ValueError, match=r"3 tokens plus max_new_tokens=8 make 11 tokens"):
        distiller.fit(prompts(), epochs=1, verbose=0)


def test_off_policy_batches_without_references_need_a_keras_teacher():
    distiller = OnPolicyDistiller(uniform_teacher, gpt2(1), lmbda=0.5, max_new_tokens=3)
    distiller.compile("adam")
    with pytest.raises(ValueError, match=r"lmbda=0\.5 makes some batches off-policy"):
        distiller.fit(prompts(), epochs=1, verbose=0)


@pytest.mark.parametrize(
    "teacher, message",
    [
        (lambda t: np.zeros((*t.shape, VOCAB - 1)), r"shape \(4, 6, 6\).*expected \(4, 6, 7\)"),
        (lambda t: np.zeros(t.shape), r"shape \(4, 6\)"),
        (
            lambda t: np.full((*t.shape, VOCAB), np.nan),
            r"'<lambda>' produced non-finite outputs: NaN or infinite values for sequences \[0, 1",
        ),
        (
            lambda t: (np.zeros((*t.shape, 2)), np.full((*t.shape, 2), VOCAB)),
            r"ids in \[7, 7\]",
        ),
    ],
)
def test_a_teacher_callable_returning_bad_scores_is_named(teacher, message):
    distiller = OnPolicyDistiller(teacher, gpt2(1), lmbda=1.0, max_new_tokens=3)
    distiller.compile("adam")
    with pytest.raises(ValueError, match=message):
        distiller.fit(prompts(), epochs=1, verbose=0)


def test_a_teacher_callable_returning_probabilities_is_refused_and_their_log_is_taught():
    teacher = gpt2(7)

    def probabilities(tokens):
        return np.asarray(keras.ops.softmax(cached_decoding.lm_logits(teacher, tokens)))

    def log_probabilities(tokens):
        return np.log(probabilities(tokens))

    distiller = OnPolicyDistiller(probabilities, gpt2(8), lmbda=1.0, max_new_tokens=3, seed=0)
    distiller.compile("adam")
    with pytest.raises(
        TeacherOutputError,
        match=r"'probabilities'.*look like probabilities.*read as log-probabilities.*their log",
    ):
        distiller.fit(prompts(), epochs=1, verbose=0)
    keras_teacher = fit_logs(
        OnPolicyDistiller(teacher, gpt2(8), lmbda=1.0, max_new_tokens=3, seed=0)
    )
    callable_teacher = fit_logs(
        OnPolicyDistiller(log_probabilities, gpt2(8), lmbda=1.0, max_new_tokens=3, seed=0)
    )
    assert callable_teacher["loss"] == pytest.approx(keras_teacher["loss"], rel=1e-4, abs=1e-6)
