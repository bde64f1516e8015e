"""Function matching: the augmentation layers, and one view for teacher and student."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import SCE, mlp
from numpy_references import reference_kl

from keras_distill import Distiller
from keras_distill._src.training import augment

BASIS = np.eye(8, dtype="float32")  # example i is the i-th basis vector: mixing is visible


def run(layer, x, training=True):
    return np.asarray(layer(x, training=training))


@pytest.mark.parametrize(
    "layer", [augment.InputMixup(seed=0), augment.InputCutMix(seed=0), augment.RandomShift1D(2)]
)
def test_layers_are_identity_unless_training_and_keep_the_shape(layer):
    x = np.random.default_rng(0).normal(size=(8, 12)).astype("float32")
    np.testing.assert_array_equal(run(layer, x, training=False), x)
    assert run(layer, x).shape == x.shape
    assert not np.array_equal(run(layer, x), x)


def test_input_mixup_is_a_convex_combination_of_two_examples():
    mixed = run(augment.InputMixup(seed=3), BASIS)
    np.testing.assert_allclose(mixed.sum(-1), 1.0, rtol=1e-5, atol=1e-6)
    assert ((mixed >= 0) & (mixed <= 1)).all()
    assert ((mixed > 1e-6).sum(-1) <= 2).all()  # itself and one partner


def test_input_cutmix_pastes_one_contiguous_segment_of_a_partner():
    x = np.repeat(np.arange(8, dtype="float32")[:, None], 20, axis=1)  # row i is all i
    cut = run(augment.InputCutMix(seed=5), x)
    for i, row in enumerate(cut):
        foreign = np.nonzero(row != i)[0]
        assert len(set(row[foreign].tolist())) <= 1  # one partner
        if len(foreign):
            assert foreign.max() - foreign.min() + 1 == len(foreign)  # contiguous
    assert (cut != x).any()


def test_input_cutmix_cuts_boxes_in_images():
    images = np.zeros((4, 6, 6, 1), "float32")
    images[2:] = 1.0
    cut = run(augment.InputCutMix(seed=2), images)
    for image in cut[..., 0]:
        rows, cols = np.nonzero(image != image[0, 0]) if image.any() else ([], [])
        if len(rows):
            box = image[min(rows) : max(rows) + 1, min(cols) : max(cols) + 1]
            assert (box == box[0, 0]).all()  # a rectangle


@pytest.mark.parametrize("fill", ["wrap", "edge", "zeros"])
def test_random_shift_moves_whole_signals(fill):
    x = np.arange(1, 11, dtype="float32")[None].repeat(16, 0)
    shifted = run(augment.RandomShift1D(3, fill=fill, seed=1), x)
    for row in shifted:
        offsets = [s for s in range(-3, 4) if np.array_equal(row[3:7], x[0, 3 - s : 7 - s])]
        assert len(offsets) == 1  # the middle moved by one shift in [-3, 3]
        if fill == "wrap":
            assert sorted(row.tolist()) == x[0].tolist()
        if fill == "zeros" and offsets[0]:
            assert (row == 0).sum() == abs(offsets[0])
    channels = run(augment.RandomShift1D(2, seed=0), np.ones((3, 10, 2), "float32"))
    assert channels.shape == (3, 10, 2)


def test_seeded_runs_repeat():
    x = np.random.default_rng(1).normal(size=(8, 12)).astype("float32")

    def pipeline():
        keras.utils.set_random_seed(7)
        layers = augment.default_augmentation((12,), "signal", mixup=True)
        return run(layers, x), run(layers, x)

    first, second = pipeline()
    again, _ = pipeline()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)  # fresh randomness at every call


@pytest.mark.parametrize(
    "layer",
    [
        augment.InputMixup(0.4, seed=1, name="mix"),
        augment.InputCutMix(2.0),
        augment.RandomShift1D(4, "edge", seed=3),
    ],
)
def test_layers_round_trip_their_config(layer):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"`concentration` must be > 0; received concentration=0"):
        augment.InputMixup(0.0)
    with pytest.raises(ValueError, match=r"`max_shift` must be an integer >= 1; received 0"):
        augment.RandomShift1D(0)
    with pytest.raises(ValueError, match=r"`fill` must be one of .*received 'reflect'"):
        augment.RandomShift1D(2, fill="reflect")
    with pytest.raises(ValueError, match="RandomTranslation for images"):
        augment.RandomShift1D(2)(np.zeros((2, 4, 4, 1)), training=True)


def test_default_augmentation_per_input_kind():
    def names(shape, kind="auto", **options):
        layers = augment.default_augmentation(shape, kind, **options).layers
        return [type(layer).__name__ for layer in layers]

    assert names((40,)) == ["GaussianNoise"]  # flat features: no order assumed
    assert names((40,), "signal") == ["RandomShift1D", "GaussianNoise"]
    assert names((40, 2), mixup=True) == ["RandomShift1D", "GaussianNoise", "InputMixup"]
    assert names((28, 28, 1)) == ["RandomTranslation"]
    with pytest.raises(ValueError, match=r"'image' augmentation does not fit inputs of shape"):
        names((40,), "image")
    with pytest.raises(ValueError, match=r"`kind` must be one of .*received 'audio'"):
        names((40,), "audio")


# -- inside the Distiller ------------------------------------------------------------


def plus_one(x, training):
    return x + 1.0 if training else x


def test_teacher_and_student_see_the_same_view_in_training_only(digits, teacher):
    x, y = digits.x_train[:128], digits.y_train[:128]
    student = mlp([8], seed=2)
    distiller = Distiller(teacher, student, temperature=2.0, augment=plus_one)
    distiller.compile(keras.optimizers.SGD(0.0), SCE)
    history = distiller.fit(x, y, batch_size=128, epochs=1, verbose=0)
    t, s = teacher.predict(x + 1, verbose=0), student.predict(x + 1, verbose=0)
    expected = reference_kl(t, s, 2.0).mean()
    assert history.history["distillation_loss"][0] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert history.history["student_loss"][0] == pytest.approx(float(SCE(y, s)), rel=1e-4, abs=1e-6)
    logs = distiller.evaluate(x, y, return_dict=True, verbose=0)  # no augmentation
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    assert logs["distillation_loss"] == pytest.approx(
        reference_kl(t, s, 2.0).mean(), rel=1e-4, abs=1e-6
    )


def train_with_augmentation(digits, teacher, **fit_kwargs):
    keras.utils.set_random_seed(11)
    layers = keras.Sequential([keras.layers.GaussianNoise(0.1), augment.InputMixup()])
    distiller = Distiller(teacher, mlp([8], seed=3), alpha=0.0, augment=layers)
    distiller.compile(keras.optimizers.Adam(1e-2), SCE, **fit_kwargs.pop("compile", {}))
    distiller.fit(digits.x_train[:256], digits.y_train[:256], epochs=2, verbose=0, **fit_kwargs)
    return distiller


def test_random_augmentation_repeats_with_the_seed_and_compiles_with_xla(digits, teacher):
    first = train_with_augmentation(digits, teacher).student.get_weights()
    second = train_with_augmentation(digits, teacher).student.get_weights()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    jit = train_with_augmentation(digits, teacher, compile={"jit_compile": True})
    assert all(np.isfinite(w).all() for w in jit.student.get_weights())


def test_augmentation_with_tf_data_label_masks_and_sample_weights(digits, teacher):
    x, y = digits.x_train[:256], digits.y_train[:256]
    mask = (np.arange(256) % 4 == 0).astype("float32")
    targets = {"labels": np.where(mask > 0, y, 0), "label_mask": mask}
    weights = np.linspace(0.5, 1.5, 256).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, targets, weights)).batch(64)
    distiller = Distiller(teacher, mlp([8], seed=4), augment=augment.InputMixup(seed=0))
    distiller.compile("adam", SCE, metrics=["accuracy"])
    history = distiller.fit(dataset, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["distillation_loss"][-1] < history.history["distillation_loss"][0]


def test_bad_augmentations_are_refused_with_what_they_returned(digits, teacher):
    x, y = digits.x_train[:64], digits.y_train[:64]
    with pytest.raises(ValueError, match=r"needs a live teacher: stored teacher outputs"):
        Distiller(None, mlp([4]), augment=plus_one)
    with pytest.raises(TypeError, match=r"`augment` must be a Keras layer .* received 3"):
        Distiller(teacher, mlp([4]), augment=3)
    cases = [
        (
            lambda x, training: x[:, :32],
            ValueError,
            r"changed the batch shape from \(\w+, 64\) "
            r"to \(\w+, 32\)",
        ),
        (lambda x, training: [x, x], ValueError, r"returned list for inputs of structure"),
        (lambda x, training: 1.0, ValueError, r"returned a float, not a tensor"),
        (lambda x, training: x[:-1], Exception, r"changed the batch (size|shape)"),
    ]
    for fn, error, message in cases:
        distiller = Distiller(teacher, mlp([4]), augment=fn)
        distiller.compile("adam", SCE)
        with pytest.raises(error, match=message):
            distiller.fit(x, y, epochs=1, verbose=0)


def test_a_distiller_with_augmentation_saves_and_loads(digits, teacher, tmp_path):
    layers = keras.Sequential([augment.RandomShift1D(3, seed=1), augment.InputMixup(0.5)])
    distiller = Distiller(teacher, mlp([4]), augment=layers)
    distiller.compile("adam", SCE)
    distiller.fit(digits.x_train[:64], digits.y_train[:64], epochs=1, verbose=0)
    distiller.save(tmp_path / "d.keras")
    restored = keras.models.load_model(tmp_path / "d.keras")
    assert [type(layer).__name__ for layer in restored.augment.layers] == [
        "RandomShift1D",
        "InputMixup",
    ]
    assert restored.augment.layers[1].concentration == 0.5
