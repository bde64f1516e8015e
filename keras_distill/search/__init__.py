"""Budget in, firmware out: search the student that fits a board, on Optuna.

`find_student` pre-flights every candidate in TFLite Micro (flash, arena, ops)
before any training, distils the ones that fit from teacher outputs stored
once, and returns the Pareto front of int8 accuracy against flash, arena or
latency, each front student beside the same architecture trained from scratch.
"""

from keras_distill._src.search.budget import Budget, Latency
from keras_distill._src.search.find import find_student
from keras_distill._src.search.records import Candidate, SearchResult, Trial
from keras_distill._src.search.space import Choices, SearchSpace, default_space

__all__ = [
    "Budget",
    "Candidate",
    "Choices",
    "Latency",
    "SearchResult",
    "SearchSpace",
    "Trial",
    "default_space",
    "find_student",
]
