"""Teachers other than one Keras model: ensembles and generating language models."""

from keras_distill.teachers.ensemble import EnsembleAverage, ensemble
from keras_distill.teachers.generation import exact_match, keras_generator, keras_hub_generator

__all__ = ["EnsembleAverage", "ensemble", "exact_match", "keras_generator", "keras_hub_generator"]
