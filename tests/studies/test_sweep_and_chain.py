import json

import keras
import numpy as np
import pytest
from conftest import mlp

from keras_distill import sweep, teacher_assistant_chain
from keras_distill._src.studies import recipes
from keras_distill._src.studies.datasets import Split


@pytest.fixture(scope="module")
def small(digits):
    return Split(digits.x_train[:400], digits.y_train[:400], digits.x_test, digits.y_test)


def builders():
    return {"h4": lambda seed: mlp([4], seed=seed), "h16": lambda seed: mlp([16], seed=seed)}


def test_sweep_records_resumes_and_summarizes(teacher, small, tmp_path, monkeypatch, capsys):
    path = tmp_path / "runs.jsonl"
    first = sweep(builders(), {"mlp128": teacher}, small, seeds=[0], epochs=3, path=path)
    assert len(first.records) == 2 and len(path.read_text().splitlines()) == 2
    assert "[2/2] teacher mlp128, student h16" in capsys.readouterr().out
    calls = []
    original = recipes.train_distilled
    monkeypatch.setattr(
        recipes, "train_distilled", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    result = sweep(builders(), {"mlp128": teacher}, small, seeds=[0, 1], epochs=3, path=path)
    assert len(calls) == 2  # only the two new runs (seed 1) were trained
    assert len(result.records) == 4
    assert [json.loads(line)["seed"] for line in path.read_text().splitlines()] == [0, 0, 1, 1]
    rows = result.summary()
    assert [row["student"] for row in rows] == ["h16", "h4"]  # by compression ratio
    for row in rows:
        assert row["seeds"] == 2
        assert row["compression"] == pytest.approx(teacher.count_params() / row["params"])
        expected = (row["distilled_mean"] - row["scratch_mean"]) / (
            row["teacher_accuracy"] - row["scratch_mean"]
        )
        assert row["gap_recovered"] == pytest.approx(expected)
    assert result.to_markdown().count("| mlp128 |") == 2
    assert result.plot().axes[0].get_xscale() == "log"


def test_sweep_rejects_empty_inputs(teacher, small):
    with pytest.raises(ValueError, match="must not be empty"):
        sweep({}, teacher, small)


def test_teacher_assistant_chain_compares_with_direct_and_scratch(teacher, small, capsys):
    assistant, student = mlp([32], seed=2), mlp([4], seed=3)
    initial = [np.array(w) for w in student.get_weights()]
    result = teacher_assistant_chain([teacher, assistant, student], small, epochs=3)
    assert [name for name, _, _ in result.steps] == ["teacher", "assistant 1", "student"]
    assert [params for _, params, _ in result.steps] == [
        teacher.count_params(),
        assistant.count_params(),
        student.count_params(),
    ]
    assert all(0.0 <= acc <= 1.0 for _, _, acc in result.steps)
    assert 0.0 <= result.direct <= 1.0 and 0.0 <= result.scratch <= 1.0
    assert result.chain_gain == pytest.approx(result.steps[-1][2] - result.direct)
    assert any(not np.array_equal(a, b) for a, b in zip(initial, student.get_weights()))
    assert "student distilled directly" in capsys.readouterr().out
    assert "| student, from scratch | 310 |" in result.to_markdown()
    with pytest.raises(ValueError, match="received 2 models"):
        teacher_assistant_chain([teacher, keras.models.clone_model(student)], small)
