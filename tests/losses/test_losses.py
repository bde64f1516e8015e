import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import STUDENT, TEACHER
from numpy_references import kl, log_softmax, reference

from keras_distill import losses

RNG = np.random.default_rng(1)


NAMES = ["kl_divergence", "reverse_kl_divergence", "jensen_shannon_divergence", "logit_mse"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_loss_matches_numpy_reference(name, temperature):
    fn = losses.get(name)
    got = np.asarray(fn(TEACHER, STUDENT, temperature))
    np.testing.assert_allclose(
        got, reference(name, TEACHER, STUDENT, temperature), rtol=1e-5, atol=1e-6
    )
    assert got.shape == (6,)


def test_kl_is_scaled_by_temperature_squared():
    t = np.array([[1.0, 0.0, 0.0]], "float32")
    s = np.array([[0.0, 0.0, 1.0]], "float32")
    unscaled = kl(log_softmax(t / 3.0), log_softmax(s / 3.0))
    np.testing.assert_allclose(
        losses.kl_divergence(t, s, 3.0), 9.0 * unscaled, rtol=1e-6, atol=1e-6
    )


def test_kl_gradient_at_t1_equals_soft_label_cross_entropy_gradient():
    student = tf.Variable(STUDENT)
    with tf.GradientTape(persistent=True) as tape:
        distill = tf.reduce_sum(losses.kl_divergence(TEACHER, student, 1.0))
        soft_ce = tf.reduce_sum(
            keras.losses.categorical_crossentropy(tf.nn.softmax(TEACHER), student, from_logits=True)
        )
    np.testing.assert_allclose(
        tape.gradient(distill, student), tape.gradient(soft_ce, student), atol=1e-6
    )
    # and both equal softmax(s) - softmax(t)
    np.testing.assert_allclose(
        tape.gradient(distill, student),
        tf.nn.softmax(STUDENT) - tf.nn.softmax(TEACHER),
        atol=1e-6,
    )


@pytest.mark.parametrize("name", NAMES)
def test_losses_are_finite_for_huge_logits_and_compute_in_float32(name):
    t = np.array([[1e4, -1e4, 0.0]], "float16")
    s = np.array([[-1e4, 1e4, 0.0]], "float16")
    value = losses.get(name)(t, s, 2.0)
    assert value.dtype == "float32"
    assert np.all(np.isfinite(np.asarray(value)))


def test_jensen_shannon_is_bounded_by_log2_times_t_squared():
    value = losses.jensen_shannon_divergence([[200.0, 0.0]], [[0.0, 200.0]], 1.0)
    np.testing.assert_allclose(value, [np.log(2.0)], rtol=1e-5, atol=1e-6)


def test_sequence_outputs_reduce_only_the_class_axis():
    t = RNG.normal(size=(2, 7, 11)).astype("float32")
    s = RNG.normal(size=(2, 7, 11)).astype("float32")
    value = np.asarray(losses.kl_divergence(t, s, 2.0))
    assert value.shape == (2, 7)
    np.testing.assert_allclose(value, reference("kl_divergence", t, s, 2.0), rtol=1e-5, atol=1e-6)


def test_loss_class_reduces_with_sample_weight():
    loss = losses.KLDivergence(temperature=2.0)
    weights = np.array([1.0, 0.0, 2.0, 0.0, 1.0, 0.0], "float32")
    per_example = reference("kl_divergence", TEACHER, STUDENT, 2.0)
    expected = (per_example * weights).sum() / len(weights)
    np.testing.assert_allclose(
        float(loss(TEACHER, STUDENT, weights)), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "cls",
    [
        losses.KLDivergence,
        losses.ReverseKLDivergence,
        losses.JensenShannonDivergence,
        losses.LogitMSE,
    ],
)
def test_loss_classes_round_trip_through_keras_serialization(cls):
    loss = cls(temperature=3.0, name="my_loss")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is cls
    assert restored.temperature == 3.0 and restored.name == "my_loss"
    np.testing.assert_allclose(
        float(restored(TEACHER, STUDENT)), float(loss(TEACHER, STUDENT)), atol=1e-6
    )


def test_wrapper_round_trips_a_registered_function():
    loss = losses.DistillationLoss(losses.reverse_kl_divergence, temperature=2.0)
    restored = losses.DistillationLoss.from_config(loss.get_config())
    assert restored.fn is losses.reverse_kl_divergence


def test_get_resolves_names_instances_and_callables():
    assert losses.get("js") is losses.jensen_shannon_divergence
    assert losses.get(losses.LogitMSE()) is losses.logit_mse

    def custom(t, s, temperature):
        return losses.logit_mse(t, s) / temperature

    assert losses.get(custom) is custom


def test_get_rejects_unknown_names_and_keras_losses():
    with pytest.raises(ValueError, match=r"Unknown distillation loss 'kld'.*kl_divergence"):
        losses.get("kld")
    with pytest.raises(TypeError, match="cannot see the temperature"):
        losses.get(keras.losses.KLDivergence())
    with pytest.raises(TypeError, match="received 3"):
        losses.get(3)


def test_wrapper_validates_its_arguments():
    with pytest.raises(TypeError, match="must be a callable"):
        losses.DistillationLoss("kl")
    with pytest.raises(ValueError, match=r"> 0; received -1"):
        losses.KLDivergence(temperature=-1)
