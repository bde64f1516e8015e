"""How a search's trials train: the optimizer every candidate and scratch twin gets."""

import numpy as np
import pytest

from keras_distill._src.search.training import TrainingPlan
from keras_distill._src.studies.datasets import Split
from keras_distill._src.studies.training_recipes import TrainingSettings


@pytest.mark.parametrize("function_matching", [False, True])
def test_trials_train_with_adam_decayed_by_a_cosine_over_the_run(function_matching):
    x, y = np.zeros((300, 4), "float32"), np.zeros(300, "int32")
    plan = TrainingPlan(Split(x, y, x, y), {}, {}, 2, epochs=4, batch_size=64, augment=abs)
    settings = TrainingSettings(**plan.settings(function_matching))
    assert settings.augment is (abs if function_matching else None)
    optimizer = settings.optimizer(len(x))
    steps = 4 * 5  # 4 epochs of ceil(300 / 64) batches
    rates = []
    for step in (0, steps // 2, steps):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    assert rates == pytest.approx([1e-2, 5e-3, 0.0], abs=1e-7)


def test_the_final_training_replaces_only_the_epochs():
    x, y = np.zeros((300, 4), "float32"), np.zeros(300, "int32")
    plan = TrainingPlan(Split(x, y, x, y), {}, {}, 2, epochs=4, batch_size=64, augment=abs)
    final = plan.settings(True, epochs=40)
    assert final == {**plan.settings(True), "epochs": 40}
    assert plan.settings(False, epochs=None)["epochs"] == 4
