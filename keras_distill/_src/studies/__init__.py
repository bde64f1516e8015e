"""Studies on top of the library: recipes, sweeps, comparisons, the demo and its data."""

from keras_distill._src.studies.capacity import sweep, teacher_assistant_chain
from keras_distill._src.studies.compression_report import CompressionReport, compare

__all__ = ["CompressionReport", "compare", "sweep", "teacher_assistant_chain"]
