"""Labelling with a teacher on Apache Beam (the `[beam]` extra).

`label` runs a whole labelling job; `LabelWithTeacher` and
`LabelShardChunks` are the transforms for a pipeline of your own, with the
teacher as a model handler (`KerasModelHandler`, `CallableModelHandler`,
`GenerateModelHandler`), the elements as `ShardChunk`s (`shard_chunks`
cuts arrays into them) and the manifest's settings from `label_settings`;
`TFRecordInputs` reads inputs from TFRecord files.
"""

from keras_distill._src.labelling.beam import (
    CallableModelHandler,
    GenerateModelHandler,
    KerasModelHandler,
    LabelShardChunks,
    LabelWithTeacher,
    label,
    label_settings,
)
from keras_distill._src.labelling.beam_inputs import ShardChunk, TFRecordInputs, shard_chunks

__all__ = [
    "CallableModelHandler",
    "GenerateModelHandler",
    "KerasModelHandler",
    "LabelShardChunks",
    "LabelWithTeacher",
    "ShardChunk",
    "TFRecordInputs",
    "label",
    "label_settings",
    "shard_chunks",
]
