"""Property-based tests (hypothesis): losses, schedules, and a fuzzed manifest loader."""

import json

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy_references import reference

from keras_distill import label_with_teacher, load_teacher_labels, losses
from keras_distill._src.labelling import TeacherLabelsError
from keras_distill._src.training import schedules

# The number of examples and their randomness come from the profile in conftest.py.
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIVERGENCES = {
    "kl": losses.kl_divergence,
    "reverse_kl": losses.reverse_kl_divergence,
    "js": losses.jensen_shannon_divergence,
    "standardized_kl": losses.standardized_kl_divergence,
    "dkd": losses.decoupled_kd,
}
SHIFT_INVARIANT = {**DIVERGENCES, "dist": losses.dist}


@st.composite
def logit_pairs(draw, scale=20.0):
    shape = draw(st.tuples(st.integers(1, 5), st.integers(2, 7)))
    values = st.floats(-scale, scale, allow_nan=False, width=32)
    teacher = draw(hnp.arrays("float32", shape, elements=values))
    student = draw(hnp.arrays("float32", shape, elements=values))
    return teacher, student


temperatures = st.sampled_from([0.5, 1.0, 2.0, 4.0])


@FAST
@given(pair=logit_pairs(), temperature=temperatures, name=st.sampled_from(sorted(DIVERGENCES)))
def test_divergences_are_non_negative_and_zero_on_equal_logits(pair, temperature, name):
    teacher, student = pair
    fn = DIVERGENCES[name]
    assert np.all(np.asarray(fn(teacher, student, temperature)) >= -1e-5)
    np.testing.assert_allclose(fn(teacher, teacher, temperature), 0.0, atol=1e-4)


@FAST
@given(
    pair=logit_pairs(),
    temperature=temperatures,
    name=st.sampled_from(sorted(SHIFT_INVARIANT)),
    shift=st.floats(-50, 50),
)
# Found by a random draw: a spread below float32 resolution was z-scored to +-1.
@example(
    pair=(np.zeros((1, 2), "float32"), np.array([[5.96e-08, 0.0]], "float32")),
    temperature=0.5,
    name="standardized_kl",
    shift=2.0,
)
def test_adding_a_constant_to_the_logits_changes_nothing(pair, temperature, name, shift):
    teacher, student = pair
    if name == "dist":  # a correlation across the batch is ill-conditioned for flat columns
        for logits in (teacher, student):
            p = np.exp(logits / temperature - (logits / temperature).max(-1, keepdims=True))
            assume((p / p.sum(-1, keepdims=True)).std(axis=0).min() > 0.05)
    fn = SHIFT_INVARIANT[name]
    base = np.asarray(fn(teacher, student, temperature))
    moved = np.asarray(fn(teacher + np.float32(shift), student - np.float32(shift), temperature))
    np.testing.assert_allclose(moved, base, rtol=2e-3, atol=2e-3)


@FAST
@given(pair=logit_pairs(), temperature=temperatures)
def test_kl_scales_by_temperature_squared(pair, temperature):
    teacher, student = pair
    softened = losses.kl_divergence(teacher / temperature, student / temperature, 1.0)
    np.testing.assert_allclose(
        losses.kl_divergence(teacher, student, temperature),
        temperature**2 * np.asarray(softened),
        rtol=1e-3,
        atol=1e-4,
    )


@FAST
@given(
    pair=logit_pairs(),
    temperature=temperatures,
    name=st.sampled_from(
        ["kl_divergence", "reverse_kl_divergence", "jensen_shannon_divergence", "logit_mse"]
    ),
)
def test_losses_agree_with_numpy_on_random_shapes(pair, temperature, name):
    teacher, student = pair
    got = np.asarray(losses.get(name)(teacher, student, temperature))
    expected = reference(name, teacher.astype("float64"), student.astype("float64"), temperature)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-4)


@FAST
@given(
    dtype=st.sampled_from(["float16", "float32"]),
    name=st.sampled_from(sorted(SHIFT_INVARIANT)),
    sign=st.sampled_from([-1.0, 1.0]),
)
def test_losses_and_gradients_stay_finite_for_extreme_logits(dtype, name, sign):
    big = min(1e4, float(np.finfo(dtype).max) / 4)  # logits far beyond any trained model
    teacher = np.array([[big, 0.0, -big], [0.0, sign * big, 0.0]], dtype)
    student = np.array([[-big, big, 0.0], [sign * big, 0.0, 0.0]], dtype)
    variables = [tf.Variable(teacher), tf.Variable(student)]
    with tf.GradientTape() as tape:
        value = SHIFT_INVARIANT[name](*variables, 2.0)
        total = tf.reduce_sum(value)
    assert value.dtype == np.float32 and np.all(np.isfinite(value))
    for gradient in tape.gradient(total, variables):
        assert np.all(np.isfinite(gradient))


ANNEALING = st.sampled_from([schedules.Linear, schedules.Cosine, schedules.Exponential])


@FAST
@given(cls=ANNEALING, start=st.floats(0.1, 20), end=st.floats(0.1, 20), steps=st.integers(1, 50))
def test_annealing_is_monotone_with_exact_endpoints(cls, start, end, steps):
    schedule = cls(start, end, steps)
    values = [schedule(step) for step in range(steps + 3)]
    assert values[0] == pytest.approx(start) and values[steps:] == [end] * 3
    differences = np.diff(values)
    assert np.all(differences <= 1e-9) or np.all(differences >= -1e-9)
    assert schedule == cls.from_config(schedule.get_config())
    assert hash(schedule) == hash(cls.from_config(schedule.get_config()))


# -- the manifest loader, fuzzed ---------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, prefix + (index,))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    x = np.random.default_rng(0).random((30, 4)).astype("float32")
    label_with_teacher(lambda b: b[:, :3], (x, np.arange(30) % 3), folder, shard_size=10, verbose=0)
    return folder, json.loads((folder / "manifest.json").read_text())


@settings(
    max_examples=max(120, settings.default.max_examples),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_an_edited_manifest_loads_exactly_or_raises_teacher_labels_error(labelled, data):
    folder, manifest = labelled
    edited = json.loads(json.dumps(manifest))
    where = data.draw(st.sampled_from(list(paths(edited))[1:]))
    parent = edited
    for key in where[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "duplicate"]))
    if action == "delete":
        del parent[where[-1]]
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(parent[where[-1]])
    else:
        parent[where[-1]] = data.draw(JSON_VALUES)
    (folder / "manifest.json").write_text(json.dumps(edited))
    try:
        count = sum(int(x.shape[0]) for x, _ in load_teacher_labels(folder, batch_size=8))
    except TeacherLabelsError:
        return
    finally:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    assert count == 30  # whatever loads, loads exactly
