"""Teachers: ensembles of several teachers, and the error every path raises for bad outputs."""

from keras_distill._src.teachers.ensemble import EnsembleAverage, ensemble
from keras_distill._src.teachers.outputs import TeacherOutputError

__all__ = ["EnsembleAverage", "TeacherOutputError", "ensemble"]
