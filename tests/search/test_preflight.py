"""The pre-flight: what it measures of an untrained candidate holds once it is trained."""

import keras
import numpy as np
import pytest

from keras_distill._src.search.budget import Budget, estimate_latency
from keras_distill._src.search.preflight import (
    int8_model,
    preflight,
    preflight_candidate,
    ranges_observed,
)
from keras_distill._src.search.progress import outcome
from keras_distill._src.search.records import Trial
from keras_distill._src.search.space import (
    FAMILIES_BY_RANK,
    Choices,
    build_candidate,
    default_space,
)
from keras_distill._src.training.quantization_aware import quantization_aware


def dense():
    return keras.Sequential(
        [
            keras.Input((40, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def conv1d_with_batch_normalization():
    return keras.Sequential(
        [
            keras.Input((40, 1)),
            keras.layers.Conv1D(16, 5, strides=2),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def signals_and_budget():
    """256 random signals of 40 steps, their labels, and a budget any candidate here fits.

    Seeds Keras too, so the candidate built next starts from the same weights.
    """
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(256, 40, 1)).astype("float32"), rng.integers(0, 10, 256)
    keras.utils.set_random_seed(0)
    return x, y, Budget.from_arguments(None, 100_000, 100_000)


@pytest.mark.parametrize("build", [dense, conv1d_with_batch_normalization])
def test_the_flash_measured_before_training_is_the_trained_models(build):
    # Zero biases and batch normalization's ones and zeros convert to shared buffers: the
    # untrained flatbuffer was 15-30% smaller than the trained one's, and a front candidate
    # passed its pre-flight only to be over the budget once trained.
    x, y, budget = signals_and_budget()
    model = build()
    weights = [w.copy() for w in model.get_weights()]
    checked = preflight(model, x, budget, estimate_latency(model, None))
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # the candidate trains from its own start
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    trained_flash = len(int8_model(model, x[:64])[0])
    assert checked.feasible and abs(checked.flash_bytes - trained_flash) <= 32


def test_a_trained_candidate_over_the_flash_budget_says_so_in_its_progress_line():
    latency = estimate_latency(dense(), None)
    trial = Trial(
        3,
        architecture={"width": 32},
        teacher="cnn",
        recipe={
            "temperature": 2.0,
            "alpha": 0.5,
            "function_matching": False,
            "quantization_aware": False,
        },
        reason="over budget after training: flash 14,232 B > 13,544 B",
        flash_bytes=14_232,
        arena_bytes=2_000,
        params=2_698,
        macs=2_624,
        latency=latency,
        int8_accuracy=0.61,
        float_accuracy=0.62,
        preflight_seconds=0.4,
        seconds=6.0,
        model_path=None,
    )
    assert not trial.feasible
    assert outcome(trial) == (
        "infeasible after training (over budget after training: flash 14,232 B > 13,544 B)"
    )


@pytest.mark.parametrize("build", [dense, conv1d_with_batch_normalization])
def test_a_quantization_aware_candidates_preflight_holds_once_it_is_trained(build):
    # The aware candidate converts with the ranges it holds: untrained, they are empty.
    x, y, budget = signals_and_budget()
    model = build()
    latency = estimate_latency(model, None)
    aware, checked = preflight_candidate(model, x, budget, latency, aware=True)
    steps = [w for w in aware.non_trainable_weights if w.path.endswith("observed_steps")]
    assert steps and all(float(w.numpy()) == 0.0 for w in steps)  # it trains from its own start
    aware.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    aware.fit(x, y, epochs=1, verbose=0)
    trained = preflight(aware, None, budget, latency)
    assert checked.feasible and trained.feasible
    assert trained.arena_bytes == checked.arena_bytes
    assert abs(trained.flash_bytes - checked.flash_bytes) <= 32


def test_an_architecture_built_again_converts_to_as_many_bytes():
    # a trial and its final training build one architecture at two points of the process
    space = default_space((40,), 10)
    suggested = Choices.stored(space.suggested[0])
    x, _, _ = signals_and_budget()
    sizes = []
    for _ in range(2):
        model = quantization_aware(build_candidate(space, suggested, 10))
        with ranges_observed(model, x[:32, :, 0]):
            sizes.append(len(int8_model(model, None)[0]))
        for _ in range(150):  # Keras' automatic layer names count up in between
            keras.layers.Dense(1)
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("input_shape", [(40,), (49, 10), (16, 16, 1)])
def test_every_family_of_the_default_spaces_trains_quantization_aware(input_shape):
    space = default_space(input_shape, 4)
    assert space.quantization_aware == (True,)
    batch = np.zeros((2, *input_shape), "float32")
    for family in FAMILIES_BY_RANK[len(input_shape)]:
        # the first option of each choice, then each suggested candidate, then the last options
        # (the largest strides among them: a strided 1-D depthwise convolution once failed)
        for settings in ({}, *space.suggested, None):

            def pick(name, options, settings=settings, family=family):
                if name == "family":
                    return family
                return options[-1] if settings is None else settings.get(name, options[0])

            model = build_candidate(space, Choices(pick), 4)
            aware = quantization_aware(model)  # raises for a layer it cannot model
            assert aware.count_params() > model.count_params()  # its ranges come on top
            assert tuple(aware(batch, training=True).shape) == (2, 4)  # a training-mode pass
