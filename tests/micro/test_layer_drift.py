"""Per-layer int8 error: the layer to blame when int8 and float disagree."""

import keras
import pytest
from conftest import SCE

from keras_distill import micro
from keras_distill._src.micro import drift


def three_layers(digits, outlier):
    """An MLP whose middle layer has, if `outlier`, one unit 300x larger than the rest."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(32, activation="relu", name="wide"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile("adam", SCE)
    model.fit(digits.x_train, digits.y_train, epochs=5, verbose=0)
    if outlier:  # the same function, but one activation sets the int8 range of `wide`
        kernel, bias = model.get_layer("wide").get_weights()
        kernel[:, 0] *= 300
        bias[0] *= 300
        model.get_layer("wide").set_weights([kernel, bias])
        kernel, bias = model.get_layer("logits").get_weights()
        kernel[0] /= 300
        model.get_layer("logits").set_weights([kernel, bias])
    return model


@pytest.mark.slow
def test_a_healthy_model_rounds_and_an_outlier_is_found(digits):
    x = digits.x_train[:200]
    healthy = drift.layer_errors(three_layers(digits, False), x)
    assert [e.op for e in healthy] == ["FULLY_CONNECTED"] * 3
    assert {e.layer for e in healthy} == {"hidden", "wide", "logits (output)"}
    assert all(0.2 < e.steps < 0.5 for e in healthy)  # rounding alone: 1 / sqrt(12) = 0.29
    broken = drift.layer_errors(three_layers(digits, True), x)
    assert broken[0].layer == "logits (output)" and broken[0].steps > 3  # measured 5.7
    assert broken[0].steps > 10 * healthy[0].steps


@pytest.mark.slow
def test_export_explains_a_low_agreement_with_the_worst_layers(digits, tmp_path):
    model = three_layers(digits, True)
    with pytest.warns(
        UserWarning,
        match=r"agrees with the float model on [\d.]+% .*logits "
        r"\(output\) [\d.]+.*quantization-aware training",
    ):
        result = micro.export(
            model,
            digits.x_train[:200],
            tmp_path / "a",
            validation_data=(digits.x_test, digits.y_test),
            agreement_threshold=1.0,
        )
    assert result.quantization_errors[0].layer == "logits (output)"
    assert (
        "| largest int8 errors (RMSE in quantization steps) | logits (output)" in result.summary()
    )
    quiet = micro.export(
        model,
        digits.x_train[:200],
        tmp_path / "b",
        validation_data=(digits.x_test, digits.y_test),
        agreement_threshold=0.0,
    )
    assert quiet.quantization_errors is None
    asked = micro.export(
        three_layers(digits, False), digits.x_train[:200], tmp_path / "c", explain_quantization=True
    )
    assert len(asked.quantization_errors) == 3


def test_advice_fits_the_fix_to_the_problem():
    output = [drift.LayerError("logits (output)", "FULLY_CONNECTED", 4.0, 1.0, 0.1)]
    text = drift.advice(output, 0.9, 0.99, 50, float_io=False)
    assert "90.0%" in text and "threshold 99%" in text and "logits (output) 4.00" in text
    assert "more representative data (50 examples" in text and "float_io=True" in text
    conv = [drift.LayerError("conv2d", "CONV_2D", 2.0, 1.0, 0.1)]
    text = drift.advice(conv, 0.9, 0.99, 500, float_io=True)
    assert "representative" not in text and "float_io" not in text and "Dense" not in text
    assert "look at the layer feeding it" in text
    rounding = [drift.LayerError("dense", "FULLY_CONNECTED", 0.4, 0.01, 0.1)]
    assert "within about twice the rounding error" in drift.advice(rounding, 0.98, 0.99, 200, False)
