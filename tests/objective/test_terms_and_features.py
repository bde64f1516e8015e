"""Several distillation terms with weights, and feature (intermediate-layer) distillation."""

import re

import keras
import numpy as np
import pytest
from conftest import SCE, Counting, mlp
from numpy_references import reference_kl

from keras_distill import Distiller
from keras_distill._src.objective.features import FeatureDistillation, Tap, feature_loss, find_layer


def hidden_name(teacher):
    """The shared digits teacher's hidden layer (its name depends on what was built before)."""
    return teacher.layers[0].name


def named_mlp(width, prefix, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(width, activation="relu", name=f"{prefix}_hidden"),
            keras.layers.Dense(10, name=f"{prefix}_logits"),
        ]
    )


def one_step(distiller, digits, n=64):
    """History of one full-batch epoch with a zero learning rate: the initial objective."""
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    x, y = digits.x_train[:n], digits.y_train[:n]
    return distiller.fit(x, y, batch_size=n, epochs=1, verbose=0).history, x, y


def numpy_cosine(t, s):
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    s = s / np.linalg.norm(s, axis=-1, keepdims=True)
    return np.mean(1 - np.sum(t * s, axis=-1))


def test_weighted_terms_make_the_objective_and_are_logged_by_name(digits, teacher):
    student = named_mlp(128, "s", 1)
    # the same width: no projector
    term = FeatureDistillation(hidden_name(teacher), "s_hidden", loss="cosine")
    distiller = Distiller(
        teacher,
        student,
        temperature=2.0,
        alpha=0.3,
        distillation_loss=["kl_divergence", "logit_mse", term],
        distillation_loss_weights=[1.0, 0.25, 2.0],
    )
    history, x, y = one_step(distiller, digits)
    t_logits, s_logits = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    kl = reference_kl(t_logits, s_logits, 2.0).mean()
    mse = np.mean((s_logits - t_logits) ** 2)
    hidden = lambda model, layer: keras.Model(model.inputs, model.get_layer(layer).output)  # noqa: E731
    cosine = numpy_cosine(
        hidden(teacher, hidden_name(teacher)).predict(x, verbose=0),
        hidden(student, "s_hidden").predict(x, verbose=0),
    )
    hard = SCE(y, s_logits).numpy()
    logs = {key: value[0] for key, value in history.items()}
    assert logs["distillation_loss/kl_divergence"] == pytest.approx(kl, rel=1e-4, abs=1e-6)
    assert logs["distillation_loss/logit_mse"] == pytest.approx(mse, rel=1e-4, abs=1e-6)
    assert logs["distillation_loss/feature_s_hidden"] == pytest.approx(cosine, rel=1e-4, abs=1e-6)
    combined = kl + 0.25 * mse + 2.0 * cosine
    assert logs["distillation_loss"] == pytest.approx(combined, rel=1e-4, abs=1e-6)
    assert logs["loss"] == pytest.approx(0.3 * hard + 0.7 * combined, rel=1e-4, abs=1e-6)


def test_one_term_logs_no_per_term_names(digits, teacher):
    history, _, _ = one_step(Distiller(teacher, mlp([8], seed=2)), digits)
    assert not [key for key in history if "/" in key]


def test_the_projector_trains_and_saves_with_the_distiller_not_the_student(
    digits, teacher, tmp_path
):
    student = named_mlp(16, "s", 3)
    distiller = Distiller(
        teacher,
        student,
        distillation_loss=["kl_divergence", FeatureDistillation(hidden_name(teacher), "s_hidden")],
    )
    projector = distiller._projectors[0]
    assert projector.units == 128 and not any(v is projector.kernel for v in student.weights)
    before = projector.get_weights()[0].copy()
    distiller.compile("adam", SCE)
    history = distiller.fit(digits.x_train, digits.y_train, epochs=4, verbose=0).history
    assert not np.allclose(projector.get_weights()[0], before)  # trained with the student
    feature = history["distillation_loss/feature_s_hidden"]
    assert feature[-1] < feature[0]
    assert [layer.name for layer in student.layers] == ["s_hidden", "s_logits"]
    distiller.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_array_equal(
        loaded._projectors[0].get_weights()[0], projector.get_weights()[0]
    )
    assert loaded.distillation_loss_weights is None
    assert isinstance(loaded.distillation_loss[1], FeatureDistillation)


def test_each_model_runs_once_per_step_with_feature_terms(digits, teacher):
    inputs = keras.Input((64,))
    counter = Counting()
    hidden = keras.layers.Dense(32, activation="relu", name="t_hidden")(inputs)
    counting = keras.Model(inputs, counter(keras.layers.Dense(10)(hidden)))
    distiller = Distiller(
        counting,
        named_mlp(8, "s", 4),
        distillation_loss=[FeatureDistillation("t_hidden", "s_hidden")],
    )
    distiller.compile("adam", SCE)
    distiller.fit(digits.x_train[:256], digits.y_train[:256], batch_size=64, epochs=2, verbose=0)
    assert float(counter.calls) == 2 * 4 + 1  # one teacher pass per step (live), and the probe


def test_attention_transfer_matches_the_papers_definition():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(2, 4, 4, 8)), rng.normal(size=(2, 4, 4, 3))

    def attention(f):
        q = np.mean(f**2, axis=-1).reshape(len(f), -1)
        return q / np.linalg.norm(q, axis=-1, keepdims=True)

    expected = np.sum((attention(s) - attention(t)) ** 2, axis=-1)
    np.testing.assert_allclose(feature_loss("attention", t, s), expected, rtol=1e-5, atol=1e-6)


def test_bad_terms_are_refused_at_construction_with_the_details(teacher):
    student = named_mlp(16, "s", 5)
    names = [layer.name for layer in teacher.layers]
    expected = f"no layer 'nope': the layers of 'teacher' are {names}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        Distiller(teacher, student, distillation_loss=[FeatureDistillation("nope", "s_hidden")])
    with pytest.raises(ValueError, match=r"widths differ; use projector='auto'"):
        Distiller(
            teacher,
            student,
            distillation_loss=[
                FeatureDistillation(hidden_name(teacher), "s_hidden", projector=None)
            ],
        )
    with pytest.raises(ValueError, match=r"\(None, 128\).*\(None, 16\).*4-D feature maps"):
        Distiller(
            teacher,
            student,
            distillation_loss=[
                FeatureDistillation(hidden_name(teacher), "s_hidden", loss="attention")
            ],
        )
    with pytest.raises(ValueError, match=r"one weight >= 0 per term \(2\); received \[1.0\]"):
        Distiller(
            teacher, student, distillation_loss=["kl", "logit_mse"], distillation_loss_weights=[1.0]
        )
    with pytest.raises(ValueError, match=r"received \[1.0, -0.5\]"):
        Distiller(
            teacher,
            student,
            distillation_loss=["kl", "logit_mse"],
            distillation_loss_weights=[1.0, -0.5],
        )
    with pytest.raises(ValueError, match="empty list"):
        Distiller(teacher, student, distillation_loss=[])
    with pytest.raises(ValueError, match="Feature terms need a live teacher"):
        Distiller(
            None, student, distillation_loss=[FeatureDistillation(hidden_name(teacher), "s_hidden")]
        )
    with pytest.raises(ValueError, match="`loss` must be one of"):
        FeatureDistillation("a", "b", loss="kl")


def test_sequence_features_are_masked():
    inputs = keras.Input((5,), dtype="int32")
    embedded = keras.layers.Embedding(20, 8, mask_zero=True, name="embed")(inputs)
    teacher = keras.Model(
        inputs, keras.layers.Dense(4)(keras.layers.Dense(8, name="t_seq")(embedded))
    )
    s_in = keras.Input((5,), dtype="int32")
    s_embedded = keras.layers.Embedding(20, 8, mask_zero=True, name="s_embed")(s_in)
    student = keras.Model(
        s_in, keras.layers.Dense(4)(keras.layers.Dense(8, name="s_seq")(s_embedded))
    )
    term = FeatureDistillation("t_seq", "s_seq")
    distiller = Distiller(teacher, student, distillation_loss=[term])
    x = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 6, 7]])
    y = np.zeros((2, 5), "int32")
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    logs = distiller.fit(x, y, batch_size=2, epochs=1, verbose=0).history
    t = keras.Model(teacher.inputs, teacher.get_layer("t_seq").output).predict(x, verbose=0)
    s = keras.Model(student.inputs, student.get_layer("s_seq").output).predict(x, verbose=0)
    per_position = np.mean((s - t) ** 2, axis=-1)
    expected = per_position[x > 0].mean()  # padded positions left out
    assert logs["distillation_loss"][0] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_the_keras_io_compile_argument_is_refused_with_several_terms(teacher):
    distiller = Distiller(teacher, mlp([8], seed=6), distillation_loss=["kl", "logit_mse"])
    with pytest.raises(ValueError, match="this distiller has several terms"):
        distiller.compile("adam", SCE, distillation_loss_fn=keras.losses.KLDivergence())


def test_a_sequential_teacher_called_elsewhere_before_still_gives_its_features(digits):
    teacher = named_mlp(32, "t", 7)
    kd_ensemble = Distiller([teacher, named_mlp(32, "u", 8)], mlp([8], seed=9))  # calls teacher
    assert kd_ensemble.teacher is not teacher
    distiller = Distiller(
        teacher,
        named_mlp(8, "s", 9),
        distillation_loss=[FeatureDistillation("t_hidden", "s_hidden")],
    )
    history, _, _ = one_step(distiller, digits)
    assert history["distillation_loss"][0] > 0


class SubclassedStudent(keras.Model):
    def __init__(self):
        super().__init__(name="sub_student")
        self.hidden = keras.layers.Dense(8, activation="relu", name="s_hidden")
        self.logits = keras.layers.Dense(10, name="s_logits")

    def call(self, x, training=False):
        return self.logits(self.hidden(x))


def nested_teacher(seed=10):
    """A teacher whose hidden layer sits inside a nested Functional block."""
    keras.utils.set_random_seed(seed)
    block_in = keras.Input((64,))
    block = keras.Model(
        block_in, keras.layers.Dense(32, activation="relu", name="inner")(block_in), name="block"
    )
    inputs = keras.Input((64,))
    return keras.Model(inputs, keras.layers.Dense(10)(block(inputs)), name="nested")


@pytest.mark.filterwarnings("ignore:Cannot see which activation ends")  # logits, as assumed
def test_nested_paths_and_subclassed_students_give_the_layers_outputs(digits):
    teacher, student = nested_teacher(), SubclassedStudent()
    with pytest.raises(ValueError, match="call it once on a batch"):
        Distiller(
            teacher, student, distillation_loss=[FeatureDistillation("block/inner", "s_hidden")]
        )
    student(digits.x_train[:1])
    with pytest.raises(ValueError, match=re.escape("the layers of 'block' are ['input_layer")):
        Distiller(teacher, student, distillation_loss=[FeatureDistillation("block/x", "s_hidden")])
    with pytest.raises(ValueError, match="'inner' has no sublayers"):
        Distiller(
            teacher, student, distillation_loss=[FeatureDistillation("block/inner/x", "s_hidden")]
        )
    term = FeatureDistillation("block/inner", "s_hidden", loss="cosine")
    distiller = Distiller(teacher, student, distillation_loss=[term])
    assert distiller._projectors[0].units == 32
    history, x, _ = one_step(distiller, digits)
    block = teacher.get_layer("block")
    t = keras.Model(block.inputs, block.get_layer("inner").output).predict(x, verbose=0)
    s = distiller._projectors[0](student.hidden(x)).numpy()
    assert history["distillation_loss"][0] == pytest.approx(numpy_cosine(t, s), rel=1e-4, abs=1e-6)
    assert [layer.name for layer in student.layers] == ["s_hidden", "s_logits"]


def test_a_layer_that_runs_twice_per_pass_is_refused(teacher):
    inputs = keras.Input((64,))
    shared = keras.layers.Dense(64, name="shared")
    student = keras.Model(inputs, keras.layers.Dense(10)(shared(shared(inputs))))
    with pytest.raises(ValueError, match="'shared' ran 2 times in one forward pass"):
        Distiller(
            teacher,
            student,
            distillation_loss=[FeatureDistillation(hidden_name(teacher), "shared")],
        )


def test_features_inside_a_keras_hub_backbone_come_from_its_own_pass():
    keras_hub = pytest.importorskip("keras_hub", reason="keras_hub is optional (not installed)")
    keras.utils.set_random_seed(11)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=8,
    )
    tap = Tap(
        backbone, ["transformer_layer_1", "transformer_layer_0/self_attention_layer"], "teacher"
    )
    assert tap.shapes == [(None, None, 16), (None, None, 16)]
    x = {
        "token_ids": np.arange(16).reshape(2, 8) % 50,
        "segment_ids": np.zeros((2, 8), "int32"),
        "padding_mask": np.ones((2, 8), "int32"),
    }
    outputs, (last, attention) = tap(x)
    np.testing.assert_allclose(last, outputs["sequence_output"], atol=1e-6)
    assert tuple(attention.shape) == (2, 8, 16)


class Blocks(keras.layers.Layer):
    """A custom layer holding sublayers in a public, a private, a list and a dict attribute."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(4, name="first")
        self._second = keras.layers.Dense(4, name="second")
        self.rest = [keras.layers.Dense(4, name=f"rest_{i}") for i in range(2)]
        self.by_role = {"head": keras.layers.Dense(2, name="head")}

    def call(self, x):
        x = self._second(self.first(x))
        for layer in self.rest:
            x = layer(x)
        return self.by_role["head"](x)


def test_a_custom_layers_sublayers_are_found_by_path():
    inputs = keras.Input((3,))
    custom = Blocks(name="custom")
    model = keras.Model(inputs, custom(inputs))
    assert find_layer(model, "custom/second", "teacher").name == "second"
    assert find_layer(model, "custom/rest_1", "teacher") is custom.rest[1]
    assert find_layer(model, "custom/head", "teacher") is custom.by_role["head"]
    names = "['first', 'second', 'rest_0', 'rest_1', 'head']"
    with pytest.raises(ValueError, match=re.escape(f"the layers of 'custom' are {names}")):
        find_layer(model, "custom/third", "teacher")
