"""DKD, DIST and logit standardization against NumPy references written from the papers."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SCE
from test_losses import STUDENT, TEACHER, kl, log_softmax

from keras_distill import Distiller, label_with_teacher, load_teacher_labels, losses

LABELS = np.array([0, 1, 2, 3, 4, 0])


def softmax(z):
    return np.exp(log_softmax(z))


def ref_dkd(t, s, temperature, labels, alpha=1.0, beta=8.0):
    """Zhao et al. 2022, Eq. 1-4, with the T**2 of their code."""
    t, s = t.astype("float64") / temperature, s.astype("float64") / temperature
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
    pt, ps = softmax(t.astype("float64") / temperature), softmax(s.astype("float64") / temperature)
    inter = pearson_distance(pt, ps, -1)
    intra = pearson_distance(pt, ps, 0).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def ref_standardized(t, s, temperature):
    """Sun et al. 2024: z-score (population std) each logit vector, then Hinton's KL."""

    def z(v):
        v = v.astype("float64")
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
    np.testing.assert_allclose(kd, tckd + (1 - p_target) * nckd, rtol=1e-4)
    got = losses.decoupled_kd(TEACHER, STUDENT, 2.0, labels=LABELS, alpha=1.0, beta=0.0)
    np.testing.assert_allclose(np.asarray(got), tckd, rtol=1e-4)


def test_dkd_takes_one_hot_labels_too():
    one_hot = np.eye(5, dtype="float32")[LABELS]
    np.testing.assert_allclose(
        losses.decoupled_kd(TEACHER, STUDENT, 2.0, labels=one_hot),
        losses.decoupled_kd(TEACHER, STUDENT, 2.0, labels=LABELS),
        rtol=1e-6,
    )


def test_dkd_without_labels_uses_the_teachers_argmax():
    argmax = TEACHER.argmax(-1)
    expected = ref_dkd(TEACHER, STUDENT, 4.0, argmax)[0]
    np.testing.assert_allclose(losses.decoupled_kd(TEACHER, STUDENT, 4.0), expected, rtol=2e-4)
    masked = np.where(np.arange(6) % 2 == 0, LABELS, -1)  # -1: label unknown
    mixed = np.where(np.arange(6) % 2 == 0, LABELS, argmax)
    np.testing.assert_allclose(
        losses.decoupled_kd(TEACHER, STUDENT, 4.0, labels=masked),
        ref_dkd(TEACHER, STUDENT, 4.0, mixed)[0],
        rtol=2e-4,
    )


def numerical_gradient(reference, s, eps=1e-5):
    grad = np.zeros_like(s, dtype="float64")
    for index in np.ndindex(*s.shape):
        up, down = s.astype("float64"), s.astype("float64")
        up[index] += eps
        down[index] -= eps
        grad[index] = (reference(up).sum() - reference(down).sum()) / (2 * eps)
    return grad


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_match_finite_differences_at_a_known_point(name):
    fn, reference = CASES[name]
    student = tf.Variable(STUDENT)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(fn(TEACHER, student, 2.0))
    got = tape.gradient(value, student).numpy()
    expected = numerical_gradient(lambda s: reference(TEACHER, s, 2.0), STUDENT)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float16_inputs_give_the_float32_result(name):
    fn, _ = CASES[name]
    t16, s16 = TEACHER.astype("float16"), STUDENT.astype("float16")
    got = np.asarray(fn(t16, s16, 2.0))
    expected = np.asarray(fn(t16.astype("float32"), s16.astype("float32"), 2.0))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sequence_outputs_reduce_the_class_axis_only():
    t = TEACHER.reshape(2, 3, 5)
    s = STUDENT.reshape(2, 3, 5)
    labels = LABELS.reshape(2, 3)
    dkd = np.asarray(losses.decoupled_kd(t, s, 2.0, labels=labels))
    expected = ref_dkd(TEACHER, STUDENT, 2.0, LABELS)[0]
    np.testing.assert_allclose(dkd.reshape(-1), expected, rtol=2e-4)
    standardized = np.asarray(losses.standardized_kl_divergence(t, s, 2.0))
    np.testing.assert_allclose(
        standardized.reshape(-1), ref_standardized(TEACHER, STUDENT, 2.0), rtol=2e-4
    )
    dist = np.asarray(losses.dist(t, s, 2.0))  # every position is a batch member
    assert dist.shape == (2, 3)
    np.testing.assert_allclose(dist.reshape(-1), ref_dist(TEACHER, STUDENT, 2.0), rtol=2e-4)


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
    assert float(loss(TEACHER, STUDENT)) == pytest.approx(expected, rel=2e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.options == loss.options
    assert float(restored(TEACHER, STUDENT)) == pytest.approx(expected, rel=2e-4)


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
    assert logs["distillation_loss"] == pytest.approx(ref_dkd(t, s, 4.0, y)[0].mean(), rel=1e-4)
    mask = (np.arange(64) % 2).astype("float32")
    targets = {"labels": np.where(mask > 0, y, 0), "label_mask": mask}
    logs = distiller.evaluate(x, targets, return_dict=True, verbose=0)
    mixed = np.where(mask > 0, y, t.argmax(-1))  # unlabelled: the teacher's argmax
    assert logs["distillation_loss"] == pytest.approx(ref_dkd(t, s, 4.0, mixed)[0].mean(), rel=1e-4)


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
    assert logs["distillation_loss"] == pytest.approx(ref_dist(t, s, 1.0).mean(), rel=1e-4)
