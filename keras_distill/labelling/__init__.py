"""Stored teacher outputs: label data once with a teacher, train from the labels many times.

`label_with_teacher` writes a teacher's outputs on examples to TFRecord
shards and a manifest, `label_responses` a generating teacher's responses to
prompts; `load_teacher_labels` reads them back as a `tf.data.Dataset` for
`kd.Distiller(teacher=None, ...)`. Every problem with stored outputs is a
`TeacherLabelsError`. `keras_distill.labelling.beam` labels on Apache Beam.
"""

from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.manifest import Manifest, read_manifest
from keras_distill._src.labelling.reader import load_teacher_labels
from keras_distill._src.labelling.response_writer import label_responses
from keras_distill._src.labelling.responses import SequenceOptions
from keras_distill._src.labelling.writer import label_with_teacher

__all__ = [
    "Manifest",
    "SequenceOptions",
    "TeacherLabelsError",
    "label_responses",
    "label_with_teacher",
    "load_teacher_labels",
    "read_manifest",
]
