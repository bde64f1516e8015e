"""`architectures.causal_lm` decodes through a key/value cache; its layers and weights stay.

`tests/data/causal_lm_functional.keras` was saved by the plain Functional `causal_lm` of commit
e1d7775 (before the cache): `causal_lm(7, 10, blocks=2, width=16, seed=11, name="old_lm")`.
"""

import pathlib

import keras
import numpy as np
import pytest

from keras_distill._src.studies.architectures import CausalTransformerLM, causal_lm
from keras_distill._src.studies.transformer_layers import (
    IntegerLayerNorm,
    PositionEmbedding,
    TransformerBlock,
)
from keras_distill._src.teachers import cached_decoding
from keras_distill._src.training.on_policy import OnPolicyDistiller

pytest.importorskip("keras_hub", reason="keras_hub is optional (not installed)")

VOCAB, LENGTH = 7, 16
OLD_FILE = pathlib.Path(__file__).parents[1] / "data" / "causal_lm_functional.keras"


def functional_causal_lm(vocabulary_size, length, blocks, width, heads=4, seed=0):
    """The graph `causal_lm` returned before the cache, as a plain Functional model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((length,), dtype="int32", name="tokens")
    x = PositionEmbedding(name="positions")(
        keras.layers.Embedding(vocabulary_size, width, name="embedding")(inputs)
    )
    for i in range(blocks):
        x = TransformerBlock(heads, width, causal=True, name=f"block_{i}")(x)
    x = IntegerLayerNorm(name="final_norm")(x)
    return keras.Model(inputs, keras.layers.Dense(vocabulary_size, name="logits")(x))


def prompts():
    """Prompts of 5, 3, 1 and 4 tokens, right-padded with 0."""
    return np.array([[1, 2, 3, 4, 5], [4, 5, 6, 0, 0], [6, 0, 0, 0, 0], [2, 2, 3, 1, 0]], "int32")


def greedy(model, new_tokens, use_cache):
    return cached_decoding.TokenDecoder(model, new_tokens, use_cache=use_cache)(prompts()).tokens


@pytest.mark.parametrize("blocks, width", [(1, 16), (2, 32)])
def test_cached_and_uncached_greedy_decodings_give_the_same_tokens(blocks, width):
    lm = causal_lm(VOCAB, LENGTH, blocks=blocks, width=width, seed=blocks)
    assert cached_decoding.TokenDecoder(lm, 4).cached  # "auto" finds the cache
    cached, uncached = greedy(lm, 11, use_cache=True), greedy(lm, 11, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
    assert cached.shape == (4, 16)
    is_prompt = prompts() != 0
    np.testing.assert_array_equal(cached[:, :5][is_prompt], prompts()[is_prompt])
    assert len({tuple(row) for row in cached[:, 5:].tolist()}) > 1  # not one constant answer


@pytest.mark.parametrize("use_cache", [True, False])
def test_the_decoder_traces_once_for_every_batch_size_prompt_width_and_start(use_cache):
    decoder = cached_decoding.TokenDecoder(
        causal_lm(VOCAB, LENGTH, blocks=1, width=16), 3, use_cache=use_cache
    )
    for rows, width in [(4, 5), (3, 5), (4, 3), (1, 1), (2, 4)]:  # as on-policy batches vary
        decoder(prompts()[:rows, :width] + (prompts()[:rows, :width] == 0))  # no empty prompt
    assert decoder.tracing_count == 1


def test_call_with_cache_gives_the_logits_of_the_full_forward_pass_at_each_position():
    lm = causal_lm(VOCAB, LENGTH, blocks=2, width=16, seed=4)
    tokens = np.random.default_rng(0).integers(0, VOCAB, (3, LENGTH)).astype("int32")
    full = np.asarray(lm(tokens))
    cache = np.zeros((3, 2, 2, LENGTH, 4, 4), "float32")  # (batch, blocks, 2, length, heads, dim)
    logits, hidden, cache = lm.call_with_cache(tokens[:, :6], cache, 0)  # a prompt of 6
    np.testing.assert_allclose(logits, full[:, :6], atol=1e-5)
    assert tuple(hidden.shape) == (3, 6, 16)
    for position in range(6, LENGTH):  # then one position at a time
        logits, _, cache = lm.call_with_cache(tokens[:, position : position + 1], cache, position)
        np.testing.assert_allclose(logits[:, 0], full[:, position], atol=1e-5)
    assert np.abs(full[:, 1:] - full[:, :-1]).max() > 1e-2  # the positions differ


def test_the_layers_weights_and_parameters_are_those_of_the_functional_model():
    for vocabulary_size, length, blocks, width in ((7, 10, 1, 16), (14, 12, 2, 64)):
        new = causal_lm(vocabulary_size, length, blocks=blocks, width=width, seed=5)
        old = functional_causal_lm(vocabulary_size, length, blocks, width, seed=5)
        assert isinstance(new, CausalTransformerLM)
        assert new.count_params() == old.count_params()
        assert [(layer.name, type(layer)) for layer in new.layers] == [
            (layer.name, type(layer)) for layer in old.layers
        ]
        for ours, theirs in zip(new.weights, old.weights, strict=True):
            np.testing.assert_array_equal(ours, theirs)  # same initialisation, same order
        tokens = np.random.default_rng(1).integers(0, vocabulary_size, (2, length))
        np.testing.assert_allclose(new(tokens), old(tokens), atol=1e-6)
    # the teacher of the benchmarks and tutorials 08/09, as the docs count it
    assert causal_lm(14, 12, blocks=2, width=64).count_params() == 69_646


def test_a_saved_model_loads_with_its_cache(tmp_path):
    lm = causal_lm(VOCAB, LENGTH, blocks=2, width=16, seed=6, name="saved_lm")
    lm.save(tmp_path / "lm.keras")
    loaded = keras.saving.load_model(tmp_path / "lm.keras")
    assert isinstance(loaded, CausalTransformerLM) and loaded.name == "saved_lm"
    assert cached_decoding.has_key_value_cache(loaded)
    tokens = prompts()
    padded = np.pad(tokens, ((0, 0), (0, LENGTH - 5)))
    np.testing.assert_allclose(loaded(padded), lm(padded), atol=1e-6)
    np.testing.assert_array_equal(greedy(loaded, 9, use_cache=True), greedy(lm, 9, use_cache=False))


def test_a_functional_causal_lm_saved_before_the_cache_still_loads_and_decodes_uncached(tmp_path):
    old = keras.saving.load_model(OLD_FILE)
    assert not isinstance(old, CausalTransformerLM) and not cached_decoding.has_key_value_cache(old)
    assert not cached_decoding.TokenDecoder(old, 4).cached
    new = causal_lm(VOCAB, 10, blocks=2, width=16, seed=0)
    old.save_weights(tmp_path / "old.weights.h5")  # e.g. the benchmark's teacher weights
    new.load_weights(tmp_path / "old.weights.h5")
    for ours, theirs in zip(new.weights, old.weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    tokens = np.pad(prompts(), ((0, 0), (0, 5)))
    np.testing.assert_allclose(new(tokens), old(tokens), atol=1e-6)
    np.testing.assert_array_equal(greedy(new, 5, use_cache=True), greedy(old, 5, use_cache="auto"))


def test_a_model_without_a_cache_or_bad_sizes_are_refused_with_the_values():
    plain = functional_causal_lm(VOCAB, LENGTH, blocks=1, width=16)
    with pytest.raises(ValueError, match=r"use_cache=True needs a model with a key/value cache"):
        cached_decoding.TokenDecoder(plain, 4, use_cache=True)
    block = TransformerBlock(heads=2, width=8, name="encoder_block")
    block.build((1, 4, 8))
    with pytest.raises(ValueError, match=r"'encoder_block' is not causal"):
        block.call_with_cache(np.zeros((1, 1, 8), "float32"), np.zeros((1, 2, 4, 2, 4)), 0)
    with pytest.raises(ValueError, match=r"vocabulary_size=1, max_sequence_length=10"):
        causal_lm(1, 10)
    with pytest.raises(ValueError, match=r"num_layers=0"):
        causal_lm(VOCAB, 10, blocks=0)


def test_on_policy_training_of_a_causal_lm_student_decodes_with_the_trained_weights():
    teacher = causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=7, name="teacher")
    student = causal_lm(VOCAB, LENGTH, blocks=1, width=16, seed=8, name="student")
    distiller = OnPolicyDistiller(teacher, student, lmbda=1.0, max_new_tokens=4, seed=0)
    before = greedy(student, 6, use_cache=True)
    distiller.compile(keras.optimizers.Adam(3e-2))
    history = distiller.fit(np.tile(prompts(), (2, 1)), batch_size=4, epochs=2, verbose=0).history
    assert history["on_policy_fraction"] == [1.0, 1.0]
    after = greedy(student, 6, use_cache=True)
    np.testing.assert_array_equal(after, greedy(student, 6, use_cache=False))
    assert not np.array_equal(before, after)  # the cached decoder reads the trained weights
