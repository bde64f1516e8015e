"""DKD, DIST and logit standardization against NumPy references written from the papers."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SCE, STUDENT, TEACHER
from numpy_references import kl, log_softmax

from keras_distill import Distiller, label_with_teacher, load_teacher_labels, losses

LABELS = np.array([0, 1, 2, 3, 4, 0])
# The references compute in extended precision (80-bit on x86): float64's cancellation at
# T = 1e4 is larger than float32 losses computed in a numerically sound form.
PRECISE = np.longdouble


def softmax(z):
    return np.exp(log_softmax(z))


def ref_dkd(t, s, temperature, labels, alpha=1.0, beta=8.0):
    """Zhao et al. 2022, Eq. 1-4, with the T**2 of their code."""
    t, s = t.astype(PRECISE) / temperature, s.astype(PRECISE) / temperature
    gt = np.eye(t.shape[-1])[labels].astype(bool)
    pt, ps = softmax(t), softmax(s)
    bt = np.stack([pt[gt], 1 - pt[gt]], -1)
    bs = np.stack([ps[gt], 1 - ps[gt]], -1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum(-1)
    others_t = np.where(gt, -np.inf, t)
    others_s = np.where(gt, -np.inf, s)
    qt, qs = softmax(others_t), softmax(others_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        nckd = np.where(gt, 0.0, qt * (np.log(qt) - np.log(qs))).sum(-1)
    return temperature**2 * (alpha * tckd + beta * nckd), pt[gt]


def pearson_distance(a, b, axis):
    a = a - a.mean(axis, keepdims=True)
    b = b - b.mean(axis, keepdims=True)
    return 1 - (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))


def ref_dist(t, s, temperature, beta=1.0, gamma=1.0):
    """Huang et al. 2022, Eq. 5-8: inter-class per example, intra-class per class."""
    pt, ps = softmax(t.astype(PRECISE) / temperature), softmax(s.astype(PRECISE) / temperature)
    inter = pearson_distance(pt, ps, -1)
    intra = pearson_distance(pt, ps, 0).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def ref_standardized(t, s, temperature):
    """Sun et al. 2024: z-score (population std) each logit vector, then Hinton's KL."""

    def z(v):
        v = v.astype(PRECISE)
        return (v - v.mean(-1, keepdims=True)) / v.std(-1, keepdims=True)

    return temperature**2 * kl(log_softmax(z(t) / temperature), log_softmax(z(s) / temperature))


CASES = {
    "dkd": (
        lambda t, s, T, **kw: losses.decoupled_kd(t, s, T, labels=LABELS, **kw),
        lambda t, s, T, **kw: ref_dkd(t, s, T, LABELS, **kw)[0],
    ),
    "dist": (losses.dist, ref_dist),
    "standardized": (losses.standardized_kl_divergence, ref_standardized),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_matches_the_numpy_reference(name, temperature):
    fn, reference = CASES[name]
    got = np.asarray(fn(TEACHER, STUDENT, temperature))
    assert got.dtype == np.float32 and got.shape == (6,)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT, temperature), rtol=2e-4, atol=1e-6)


def test_dkd_decouples_classical_kd():
    """KD = TCKD + (1 - p_target) * NCKD, the identity DKD is built on."""
    tckd, p_target = ref_dkd(TEACHER, STUDENT, 2.0, LABELS, alpha=1.0, beta=0.0)
    nckd, _ = ref_dkd(TEACHER, STUDENT, 2.0, LABELS, alpha=0.0, beta=1.0)
    kd = np.asarray(losses.kl_divergence(TEACHER, STUDENT, 2.0))
    np.testing.assert_allclose(kd, tckd + (1 - p_target) * nckd, rtol=1e-4, atol=1e-6)
    got = losses.decoupled_kd(TEACHER, STUDENT, 2.0, labels=LABELS, alpha=1.0, beta=0.0)
    np.testing.assert_allclose(np.asarray(got), tckd, rtol=1e-4, atol=1e-6)


def test_dkd_takes_one_hot_labels_too():
    one_hot = np.eye(5, dtype="float32")[LABELS]
    np.testing.assert_allclose(
        losses.decoupled_kd(TEACHER, STUDENT, 2.0, labels=one_hot),
        losses.decoupled_kd(TEACHER, STUDENT, 2.0, labels=LABELS),
        rtol=1e-6,
        atol=1e-6,
    )


def test_dkd_without_labels_uses_the_teachers_argmax():
    argmax = TEACHER.argmax(-1)
    expected = ref_dkd(TEACHER, STUDENT, 4.0, argmax)[0]
    np.testing.assert_allclose(
        losses.decoupled_kd(TEACHER, STUDENT, 4.0), expected, rtol=2e-4, atol=1e-6
    )
    masked = np.where(np.arange(6) % 2 == 0, LABELS, -1)  # -1: label unknown
    mixed = np.where(np.arange(6) % 2 == 0, LABELS, argmax)
    np.testing.assert_allclose(
        losses.decoupled_kd(TEACHER, STUDENT, 4.0, labels=masked),
        ref_dkd(TEACHER, STUDENT, 4.0, mixed)[0],
        rtol=2e-4,
        atol=1e-6,
    )


def numerical_gradient(reference, s, eps=1e-5):
    grad = np.zeros_like(s, dtype="float64")
    for index in np.ndindex(*s.shape):
        up, down = s.astype("float64"), s.astype("float64")
        up[index] += eps
        down[index] -= eps
        grad[index] = (reference(up).sum() - reference(down).sum()) / (2 * eps)
    return grad


@pytest.mark.parametrize("spread", [3.0, 1e-2])
@pytest.mark.parametrize("temperature", [1.0, 4.0, 100.0])
@pytest.mark.parametrize("name", sorted(CASES) + ["js", "kl", "reverse_kl"])
def test_gradients_match_finite_differences(name, temperature, spread):
    # Those built on numerics.kl_from_log_ratio (all but DIST) carry a hand-written gradient.
    fn, reference = {**CASES, **KL_FAMILY}[name]
    teacher, student = (spread / 3.0 * TEACHER).astype("float32"), spread / 3.0 * STUDENT
    variables = [tf.Variable(teacher), tf.Variable(student.astype("float32"))]
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(fn(*variables, temperature))
    got = tape.gradient(value, variables)
    expected = [
        numerical_gradient(lambda t: reference(t, student, temperature), teacher),
        numerical_gradient(lambda s: reference(teacher, s, temperature), student),
    ]
    for gradient, reference_gradient in zip(got, expected, strict=True):
        scale = np.abs(reference_gradient).max()
        np.testing.assert_allclose(gradient, reference_gradient, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float16_inputs_give_the_float32_result(name):
    fn, _ = CASES[name]
    t16, s16 = TEACHER.astype("float16"), STUDENT.astype("float16")
    got = np.asarray(fn(t16, s16, 2.0))
    expected = np.asarray(fn(t16.astype("float32"), s16.astype("float32"), 2.0))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_sequence_outputs_reduce_the_class_axis_only():
    t = TEACHER.reshape(2, 3, 5)
    s = STUDENT.reshape(2, 3, 5)
    labels = LABELS.reshape(2, 3)
    dkd = np.asarray(losses.decoupled_kd(t, s, 2.0, labels=labels))
    expected = ref_dkd(TEACHER, STUDENT, 2.0, LABELS)[0]
    np.testing.assert_allclose(dkd.reshape(-1), expected, rtol=2e-4, atol=1e-6)
    standardized = np.asarray(losses.standardized_kl_divergence(t, s, 2.0))
    np.testing.assert_allclose(
        standardized.reshape(-1), ref_standardized(TEACHER, STUDENT, 2.0), rtol=2e-4, atol=1e-6
    )
    dist = np.asarray(losses.dist(t, s, 2.0))  # every position is a batch member
    assert dist.shape == (2, 3)
    np.testing.assert_allclose(
        dist.reshape(-1), ref_dist(TEACHER, STUDENT, 2.0), rtol=2e-4, atol=1e-6
    )


def test_standardization_ignores_the_scale_and_shift_of_the_logits():
    value = losses.standardized_kl_divergence(TEACHER, 5.0 * TEACHER + 3.0, 2.0)
    assert float(np.max(np.abs(value))) < 1e-5
    assert float(np.min(losses.kl_divergence(TEACHER, 5.0 * TEACHER + 3.0, 2.0))) > 1e-3


@pytest.mark.parametrize(
    "loss, expected",
    [
        (
            losses.DecoupledKD(alpha=0.5, beta=2.0, temperature=4.0),
            ref_dkd(TEACHER, STUDENT, 4.0, TEACHER.argmax(-1), alpha=0.5, beta=2.0)[0].mean(),
        ),
        (
            losses.DIST(beta=2.0, gamma=0.5, temperature=1.0),
            ref_dist(TEACHER, STUDENT, 1.0, beta=2.0, gamma=0.5).mean(),
        ),
        (
            losses.StandardizedKLDivergence(temperature=2.0),
            ref_standardized(TEACHER, STUDENT, 2.0).mean(),
        ),
    ],
)
def test_loss_classes_keep_their_options_through_serialization(loss, expected):
    assert float(loss(TEACHER, STUDENT)) == pytest.approx(expected, rel=2e-4, abs=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.options == loss.options
    assert float(restored(TEACHER, STUDENT)) == pytest.approx(expected, rel=2e-4, abs=1e-6)


def test_names_resolve():
    assert losses.get("dkd") is losses.decoupled_kd
    assert losses.get("dist") is losses.dist
    assert losses.get("standardized_kl") is losses.standardized_kl_divergence


def test_the_distiller_gives_dkd_the_labels_and_masks_unlabelled_examples(digits, teacher):
    x, y = digits.x_train[:64], digits.y_train[:64]
    keras.utils.set_random_seed(1)
    student = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    distiller = Distiller(
        teacher,
        student,
        temperature=4.0,
        alpha=0.0,
        distillation_loss=losses.DecoupledKD(alpha=1.0, beta=8.0),
    )
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    logs = distiller.evaluate(x, y, return_dict=True, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(
        ref_dkd(t, s, 4.0, y)[0].mean(), rel=1e-4, abs=1e-6
    )
    mask = (np.arange(64) % 2).astype("float32")
    targets = {"labels": np.where(mask > 0, y, 0), "label_mask": mask}
    logs = distiller.evaluate(x, targets, return_dict=True, verbose=0)
    mixed = np.where(mask > 0, y, t.argmax(-1))  # unlabelled: the teacher's argmax
    assert logs["distillation_loss"] == pytest.approx(
        ref_dkd(t, s, 4.0, mixed)[0].mean(), rel=1e-4, abs=1e-6
    )


def test_losses_that_need_full_logits_refuse_top_k_outputs(digits, teacher, tmp_path):
    label_with_teacher(teacher, digits.x_train[:64], tmp_path, top_k=3, verbose=0)
    student = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    for loss in ("dkd", "dist"):
        distiller = Distiller(None, student, distillation_loss=loss)
        distiller.compile("adam", SCE)
        with pytest.raises(
            ValueError,
            match=rf"'{loss if loss == 'dist' else 'decoupled_kd'}' "
            "needs the teacher's full logits",
        ):
            distiller.fit(load_teacher_labels(tmp_path), verbose=0)


def test_stored_full_logits_work_with_dist(digits, teacher, tmp_path):
    x = digits.x_train[:128]
    label_with_teacher(teacher, x, tmp_path, verbose=0)
    student = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    distiller = Distiller(None, student, temperature=1.0, distillation_loss="dist")
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    logs = distiller.evaluate(
        load_teacher_labels(tmp_path, batch_size=128), return_dict=True, verbose=0
    )
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(
        ref_dist(t, s, 1.0).mean(), rel=1e-4, abs=1e-6
    )


# -- accuracy at the edges: every divergence against a float64 reference ---------------------

EDGE_RNG = np.random.default_rng(25)
EDGE_LOGITS = {
    "ordinary": (3.0 * EDGE_RNG.normal(size=(2, 6, 5)), 0.0),
    "near_constant": (1e-3 * EDGE_RNG.normal(size=(2, 6, 5)), 10.0),
    "magnitude_1e4": (1e4 * EDGE_RNG.normal(size=(2, 6, 5)), 0.0),
}


def ref_kl_family(name):
    def reference(t, s, temperature):
        t, s = t.astype(np.longdouble), s.astype(np.longdouble)
        lt, ls = log_softmax(t / temperature), log_softmax(s / temperature)
        if name == "kl":
            return temperature**2 * kl(lt, ls)
        if name == "reverse_kl":
            return temperature**2 * kl(ls, lt)
        lm = np.logaddexp(lt, ls) - np.log(PRECISE(2.0))
        return temperature**2 * 0.5 * (kl(lt, lm) + kl(ls, lm))

    return reference


KL_FAMILY = {
    "kl": (losses.kl_divergence, ref_kl_family("kl")),
    "reverse_kl": (losses.reverse_kl_divergence, ref_kl_family("reverse_kl")),
    "js": (losses.jensen_shannon_divergence, ref_kl_family("js")),
}
EDGE_CASES = {**KL_FAMILY, **CASES}


@pytest.mark.parametrize("temperature", [1e-3, 1.0, 1e4])
@pytest.mark.parametrize("logits", sorted(EDGE_LOGITS))
@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_every_divergence_is_accurate_at_the_edges(name, logits, temperature):
    values, offset = EDGE_LOGITS[logits]
    teacher = (offset + values[0]).astype("float32")
    student = (offset + 0.5 * values[0, ::-1] + 0.5 * values[1]).astype("float32")
    fn, reference = EDGE_CASES[name]
    got = np.asarray(fn(teacher, student, temperature))
    with np.errstate(all="ignore"):
        expected = reference(teacher, student, temperature)
    assert np.all(np.isfinite(got))
    # Where the paper's formula is undefined (one-hot probabilities: log 0, a flat class
    # column in DIST's correlation), the reference is nan: the loss need only be finite.
    # DIST at T = 1e-3: most probabilities underflow float32, so its per-class correlations
    # across the batch compare columns float32 holds as flat; only finiteness is asked there.
    defined = np.isfinite(expected) & (name != "dist" or temperature >= 1.0)
    scale = np.abs(expected[defined]).max(initial=0.0)
    np.testing.assert_allclose(
        got[defined], expected[defined], rtol=2e-3, atol=1e-5 * scale + 1e-12
    )


@pytest.mark.parametrize("temperature", [1e5, 1e6])
def test_kl_at_huge_temperatures_tends_to_half_the_logit_variance(temperature):
    # A naive form gives 122.8 at T = 1e5 and -11172 at T = 1e6 for a true value near 3.45.
    t, s = TEACHER.astype("float64"), STUDENT.astype("float64")
    limit = 0.5 * (t - s).var(-1)  # T**2 * KL -> var_uniform(t - s) / 2 as T -> infinity
    for fn in (losses.kl_divergence, losses.reverse_kl_divergence):
        got = np.asarray(fn(TEACHER, STUDENT, temperature))
        np.testing.assert_allclose(got, limit, rtol=1e-3, atol=1e-6)
    js = np.asarray(losses.jensen_shannon_divergence(TEACHER, STUDENT, temperature))
    np.testing.assert_allclose(
        js, limit / 4, rtol=1e-3, atol=1e-6
    )  # JS ~ KL / 4 for close distributions


def test_temperatures_beyond_the_accurate_range_are_refused():
    from keras_distill._src.objective.objective import MAX_TEMPERATURE, checked_temperature

    assert checked_temperature(MAX_TEMPERATURE) == MAX_TEMPERATURE
    with pytest.raises(ValueError, match=r"at most 1e\+06; received 10000000.0.*logit_mse"):
        checked_temperature(1e7)


def test_standardization_floor_scales_with_the_logits_magnitude():
    # Teacher [[0, 0]], student [[5.96e-08, 0]], T = 0.5, shift 2.0. At 2.0 the
    # student's spread is below float32 resolution (one ulp is 2.4e-7): rounding noise, which
    # the old absolute 1e-7 floor z-scored into +-1. Noise of a few ulps is now nearly flat.
    ulp = np.spacing(np.float32(2.0))
    teacher = np.array([[2.0, 2.0]], "float32")
    for spread in (1, 2, 4):
        student = np.array([[2.0 + spread * ulp, 2.0]], "float32")
        loss = float(losses.standardized_kl_divergence(teacher, student, 0.5)[0])
        assert loss < 1e-2 * spread**2
    # A spread well above the resolution is still standardized as the paper says.
    student = np.array([[2.0 + 1e-3, 2.0]], "float32")
    expected = ref_standardized(teacher + np.float32([[1e-3, 0]]), student, 0.5)
    got = losses.standardized_kl_divergence(teacher + np.float32([[1e-3, 0]]), student, 0.5)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-3, atol=1e-6)


def test_dist_correlations_survive_large_temperatures_and_flat_rows():
    t, s = TEACHER, STUDENT
    got = np.asarray(losses.dist(t, s, 1e4)) / 1e8
    np.testing.assert_allclose(got, ref_dist(t, s, 1e4) / 1e8, rtol=1e-3, atol=1e-6)
    flat = np.zeros_like(t)
    assert np.all(np.isfinite(np.asarray(losses.dist(flat, s, 1.0))))
