"""A student initialised from its teacher's weights, the DistilBERT way."""

import keras
import numpy as np
import pytest

from keras_distill import init_from_teacher


def stack(blocks, seed, width=8):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((6,)), keras.layers.Dense(width, name="embed")]
    layers += [
        keras.layers.Dense(width, activation="relu", name=f"block_{i}") for i in range(blocks)
    ]
    layers += [keras.layers.LayerNormalization(name="norm"), keras.layers.Dense(3, name="head")]
    return keras.Sequential(layers)


def test_every_other_block_and_the_unique_layers_are_copied():
    teacher, student = stack(4, 0), stack(2, 1)
    before = [w.copy() for w in teacher.get_weights()]
    report = init_from_teacher(student, teacher)
    assert report.copied == (
        ("embed", "embed"),
        ("block_0", "block_0"),
        ("block_1", "block_2"),
        ("norm", "norm"),
        ("head", "head"),
    )
    assert report.skipped == ()
    np.testing.assert_array_equal(
        student.get_layer("block_1").kernel, teacher.get_layer("block_2").kernel
    )
    for a, b in zip(teacher.get_weights(), before):  # the teacher is never modified
        np.testing.assert_array_equal(a, b)
    assert "| block_1 | block_2 | copied |" in report.to_markdown()


def test_layers_without_a_match_are_reported_not_guessed():
    teacher, student = stack(3, 0), stack(2, 1, width=8)
    report = init_from_teacher(student, teacher)
    assert dict(report.skipped) == {
        "block_0": "2 such layers against the teacher's 3 (not a multiple)",
        "block_1": "2 such layers against the teacher's 3 (not a multiple)",
    }
    wide = stack(2, 2, width=16)
    report = init_from_teacher(wide, teacher)
    assert (
        "no teacher layer of kind Dense with weight shapes [(6, 16), (16,)]"
        in dict(report.skipped)["embed"]
    )


def test_an_explicit_map_is_checked():
    teacher, student = stack(4, 0), stack(2, 1)
    report = init_from_teacher(student, teacher, {"block_0": "block_1", "block_1": "block_3"})
    assert report.copied == (("block_0", "block_1"), ("block_1", "block_3"))
    assert ("head", "not in layer_map") in report.skipped
    with pytest.raises(ValueError, match=r"layer_map names \['nope'\], which the teacher has not"):
        init_from_teacher(student, teacher, {"block_0": "nope"})
    with pytest.raises(
        ValueError,
        match=r"'head' has weights \[\(8, 3\), \(3,\)\], teacher layer "
        r"'block_0' \[\(8, 8\), \(8,\)\]",
    ):
        init_from_teacher(student, teacher, {"head": "block_0"})


def test_a_keras_hub_bert_backbone_is_halved():
    keras_hub = pytest.importorskip("keras_hub", reason="keras_hub is optional (not installed)")
    options = dict(
        vocabulary_size=100, hidden_dim=16, intermediate_dim=32, num_heads=2, max_sequence_length=12
    )
    teacher = keras_hub.models.BertBackbone(num_layers=4, **options)
    student = keras_hub.models.BertBackbone(num_layers=2, **options)
    report = init_from_teacher(student, teacher)
    assert ("transformer_layer_1", "transformer_layer_2") in report.copied
    assert ("token_embedding", "token_embedding") in report.copied and report.skipped == ()
    for a, b in zip(
        student.get_layer("transformer_layer_1").get_weights(),
        teacher.get_layer("transformer_layer_2").get_weights(),
    ):
        np.testing.assert_array_equal(a, b)


def test_the_distilbert_recipe_initialises_and_trains_the_half_depth_student(digits):
    from keras_distill._src.studies import recipes

    def encoder(blocks, seed):
        keras.utils.set_random_seed(seed)
        layers = [keras.Input((64,)), keras.layers.Dense(32, activation="relu", name="embed")]
        layers += [
            keras.layers.Dense(32, activation="relu", name=f"block_{i}") for i in range(blocks)
        ]
        return keras.Sequential(layers + [keras.layers.Dense(10, name="head")])

    teacher = encoder(4, 0)
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(digits.x_train, digits.y_train, epochs=5, verbose=0)
    accuracy, report = recipes.train_distilbert_style(
        teacher, encoder(2, 1), digits, hidden_pairs=[("block_3", "block_1")], epochs=3
    )
    assert ("block_1", "block_2") in report.copied and accuracy > 0.5
    objective = recipes.distilbert_objective([("block_3", "block_1")])
    assert objective["alpha"] == 0.25 and objective["temperature"] == 2.0
    # 5 : 2 : 1 of the paper: (1 - alpha) * weights = 5/8 and 1/8
    weights = [0.75 * w for w in objective["distillation_loss_weights"]]
    assert weights == pytest.approx([5 / 8, 1 / 8])
