import math

import keras
import pytest

from keras_distill._src.training import schedules


def test_linear_cosine_exponential_go_from_start_to_end():
    linear = schedules.Linear(8.0, 2.0, steps=4)
    assert [linear(s) for s in range(6)] == [8.0, 6.5, 5.0, 3.5, 2.0, 2.0]
    cosine = schedules.Cosine(8.0, 2.0, steps=4)
    assert cosine(0) == 8.0 and cosine(4) == 2.0 and cosine(9) == 2.0
    assert cosine(2) == pytest.approx(5.0)
    assert cosine(1) == pytest.approx(2.0 + 6.0 * 0.5 * (1 + math.cos(math.pi / 4)))
    exponential = schedules.Exponential(8.0, 1.0, steps=3)
    assert [exponential(s) for s in range(4)] == pytest.approx([8.0, 4.0, 2.0, 1.0])


def test_constant_and_step():
    assert schedules.Constant(3)(0) == 3.0
    step = schedules.Step([2, 5], [4.0, 2.0, 1.0])
    assert [step(s) for s in range(7)] == [4.0, 4.0, 2.0, 2.0, 2.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: schedules.Linear(1, 2, steps=0), r"steps=0"),
        (lambda: schedules.Cosine(1, 2, steps=2.5), r"steps=2.5"),
        (lambda: schedules.Exponential(0.0, 2, steps=3), r"start=0.0"),
        (lambda: schedules.Step([3, 2], [1, 2, 3]), r"boundaries=\[3, 2\]"),
        (lambda: schedules.Step([3], [1.0]), r"one more element"),
    ],
)
def test_bad_arguments_are_rejected_with_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_negative_step_is_rejected():
    with pytest.raises(ValueError, match="step=-1"):
        schedules.Linear(1.0, 2.0, 3)(-1)


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.Constant(2.0),
        schedules.Linear(8.0, 1.0, 10),
        schedules.Cosine(8.0, 1.0, 10),
        schedules.Exponential(8.0, 1.0, 10),
        schedules.Step([3], [4.0, 1.0]),
    ],
)
def test_schedules_round_trip_through_keras_serialization(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    assert config["registered_name"].startswith("keras_distill>")
    restored = keras.saving.deserialize_keras_object(config)
    assert restored == schedule
    assert [restored(s) for s in range(12)] == [schedule(s) for s in range(12)]
    assert repr(restored) == repr(schedule)
