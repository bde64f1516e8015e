"""Teachers other than one Keras model: ensembles and generating (language-model) teachers.

`ensemble.ensemble(teachers, weights)` averages several teachers into one;
`generation.keras_generator` and `generation.keras_hub_generator` turn Keras
language models into the `generate` callables that `label_with_teacher`
stores responses from.
"""

from keras_distill._src.teachers import ensemble, generation

__all__ = ["ensemble", "generation"]
