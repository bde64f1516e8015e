"""Stored teacher outputs: labelling data once with a teacher, and training from the labels.

`label_with_teacher` (and `kd.labelling.beam` on Apache Beam)
write TFRecord shards and a manifest (`keras_distill._src.labelling.manifest`);
`load_teacher_labels` reads them back as a `tf.data.Dataset` for
`Distiller(teacher=None, ...)`. Every problem with stored outputs is a
`TeacherLabelsError`.
"""

from keras_distill._src.labelling.errors import TeacherLabelsError
from keras_distill._src.labelling.reader import load_teacher_labels
from keras_distill._src.labelling.writer import label_with_teacher

__all__ = ["TeacherLabelsError", "label_with_teacher", "load_teacher_labels"]
