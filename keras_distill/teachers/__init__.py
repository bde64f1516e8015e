"""Teachers other than one Keras model: ensembles of several teachers."""

from keras_distill._src.teachers.ensemble import EnsembleAverage, ensemble

__all__ = ["EnsembleAverage", "ensemble"]
