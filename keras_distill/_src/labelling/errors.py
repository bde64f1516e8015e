"""The one error type for stored teacher outputs: `TeacherLabelsError`."""


class TeacherLabelsError(ValueError):
    """Stored teacher outputs are missing, corrupt, inconsistent or invalid.

    Raised by every writer (`kd.label_with_teacher`, `kd.labelling.label_responses`,
    `kd.labelling.beam`) and by `kd.load_teacher_labels`; a `ValueError`, so
    callers that catch bad input generally catch it too.

    Example:
    >>> import tempfile
    >>> import keras_distill as kd
    >>> try:
    ...     kd.load_teacher_labels(tempfile.mkdtemp())
    ... except kd.labelling.TeacherLabelsError as error:
    ...     print(error)
    No manifest.json in '...': not a label_with_teacher output directory.
    """
