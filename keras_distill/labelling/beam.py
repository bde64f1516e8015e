"""Labelling with a teacher on Apache Beam (the `[beam]` extra).

`label` runs a whole labelling job; `LabelWithTeacher` and
`LabelShardChunks` are the transforms for a pipeline of your own;
`TFRecordInputs` reads inputs from TFRecord files.
"""

from keras_distill._src.labelling.beam import LabelShardChunks, LabelWithTeacher, label
from keras_distill._src.labelling.beam_inputs import TFRecordInputs

__all__ = ["LabelShardChunks", "LabelWithTeacher", "TFRecordInputs", "label"]
