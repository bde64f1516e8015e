"""The recipes: scratch on the same augmentation, function matching, the temperature choice."""

import keras
import numpy as np
import pytest
from conftest import mlp

from keras_distill._src.studies import recipes
from keras_distill._src.studies.datasets import Split
from keras_distill._src.training import augment


@pytest.fixture(scope="module")
def small(digits):
    return Split(digits.x_train[:512], digits.y_train[:512], digits.x_test, digits.y_test)


def test_scratch_on_the_same_augmentation_trains_on_mixed_labels(small):
    options = dict(epochs=20, batch_size=64, learning_rate=3e-3)
    plain = recipes.train_from_scratch(mlp([16], seed=1), small, **options)
    views = keras.Sequential([keras.layers.GaussianNoise(0.05), augment.InputMixup(seed=0)])
    mixed = recipes.train_from_scratch(
        mlp([16], seed=1), small, augment=views, schedule="cosine", **options
    )
    assert 0.5 < plain <= 1.0 and 0.3 < mixed <= 1.0
    assert mixed != plain


def test_cutmix_mixes_labels_by_the_pasted_share():
    x = np.repeat(np.arange(8, dtype="float32")[:, None], 20, axis=1)
    labels = np.eye(8, dtype="float32")
    cut, mixed = augment.with_mixed_labels(augment.InputCutMix(seed=4), x, labels)
    cut, mixed = np.asarray(cut), np.asarray(mixed)
    for i in range(8):
        own = float(np.mean(cut[i] == i))
        assert mixed[i, i] == pytest.approx(own, abs=1e-6) or own == 1.0
        np.testing.assert_allclose(mixed[i].sum(), 1.0, rtol=1e-6, atol=1e-6)


def test_function_matching_learns_with_the_default_augmentation(teacher, small):
    accuracy = recipes.train_function_matching(teacher, mlp([16], seed=2), small, epochs=40, seed=0)
    assert 0.5 < accuracy <= 1.0


def test_choose_temperature_never_looks_at_the_test_split(teacher, small):
    blind = Split(small.x_train, small.y_train, None, None)  # a test split would crash
    best, scores, seconds = recipes.choose_temperature(
        teacher, lambda: mlp([8], seed=3), blind, candidates=(1.0, 4.0), epochs=3
    )
    assert set(scores) == {1.0, 4.0} and best == max(scores, key=scores.get)
    assert all(0.0 <= value <= 1.0 for value in scores.values()) and seconds > 0


def test_bad_recipe_arguments_are_refused(teacher, small):
    with pytest.raises(ValueError, match=r"`schedule` must be one of .*received 'linear'"):
        recipes.train_from_scratch(mlp([4]), small, epochs=1, schedule="linear")
    with pytest.raises(ValueError, match=r"in \(0, 1\); received .*validation_fraction=1.5"):
        recipes.choose_temperature(teacher, lambda: mlp([4]), small, validation_fraction=1.5)
