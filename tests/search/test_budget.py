"""A search's budget: where each limit comes from, and how it is described."""

import keras
import pytest

import keras_distill as kd
from keras_distill._src.search.budget import Budget, estimate_latency


def test_limits_given_by_number_are_described_as_given_not_as_a_share_of_the_board():
    budget = Budget.from_arguments("arduino_nano_33_ble_sense", 13_536, 3_680)
    assert (budget.flash_bytes, budget.ram_bytes) == (13_536, 3_680)
    assert budget.describe() == "flash 13,536 B (from flash_bytes=), RAM 3,680 B (from ram_bytes=)"


def test_a_board_budget_names_the_share():
    budget = Budget.from_arguments("esp32", None, None, model_share=0.25, latency_ms=5)
    assert budget.describe() == "flash 1,048,576 B, RAM 81,920 B (25% of esp32), latency 5 ms"


def test_one_limit_given_and_one_from_the_board_are_each_described():
    budget = Budget.from_arguments("esp32", None, 5_000, model_share=0.5)
    # the share scales the board's flash, not the RAM given by number
    assert (budget.flash_bytes, budget.ram_bytes) == (2_097_152, 5_000)
    assert budget.describe() == "flash 2,097,152 B (50% of esp32), RAM 5,000 B (from ram_bytes=)"


@pytest.mark.parametrize(
    "arguments, described",
    [
        ((None, 12_000, 6_000), "flash 12,000 B, RAM 6,000 B"),
        ((None, 12_000, None), "flash 12,000 B, RAM unlimited"),
    ],
)
def test_numbers_without_a_board(arguments, described):
    assert Budget.from_arguments(*arguments).describe() == described


def test_a_quantization_aware_model_has_its_float_models_latency_estimate():
    model = keras.Sequential(
        [
            keras.Input((40, 1)),
            keras.layers.Conv1D(8, 5, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    float_estimate = estimate_latency(model, 64_000_000)
    aware_estimate = estimate_latency(kd.quantization_aware(model), 64_000_000)
    assert aware_estimate.method == float_estimate.method  # the dense and conv MACs, as counted
    assert aware_estimate.seconds == pytest.approx(float_estimate.seconds, abs=1e-12)
