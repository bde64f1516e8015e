"""Generating (language-model) teachers: `generate` callables, decoding and scoring."""

from keras_distill._src.teachers.cached_decoding import TokenDecoder, small_gpt2_lm
from keras_distill._src.teachers.generation import exact_match, keras_generator, keras_hub_generator

__all__ = ["TokenDecoder", "exact_match", "keras_generator", "keras_hub_generator", "small_gpt2_lm"]
