"""The `keras-distill` command's environment, set before TensorFlow loads.

Every way of running the command (its console script, `python -m
keras_distill`) imports the package first, and the package loads TensorFlow;
so `keras_distill._src`, which holds every module that loads it, calls
`set_defaults` first. This module imports nothing that loads TensorFlow.
"""

from __future__ import annotations

import os
import pathlib
import sys

COMMAND = "keras-distill"
DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # TensorFlow's C++ INFO and WARNING lines stay out


def is_the_command() -> bool:
    """Whether this process runs the `keras-distill` command (script or `python -m`)."""
    script = pathlib.Path(sys.argv[0]).stem if sys.argv else ""
    argv = list(getattr(sys, "orig_argv", ()))
    return script == COMMAND or ("-m", "keras_distill") in zip(argv, argv[1:], strict=False)


def set_defaults() -> None:
    """In the command's process, sets `DEFAULTS` the user's environment leaves unset."""
    if is_the_command():
        for name, value in DEFAULTS.items():
            os.environ.setdefault(name, value)
