"""Printing as Keras' own callbacks do, without Keras' private `io_utils`."""

from __future__ import annotations

import logging
import sys

import keras

LOGGER = logging.getLogger("keras_distill")


def print_msg(message: str) -> None:
    """Prints a line to stdout, or logs it when Keras' interactive logging is off.

    Keras' callbacks print through `keras.src.utils.io_utils.print_msg`, which
    follows `keras.config.disable_interactive_logging()`; this does the same
    through public APIs only (the message goes to the `keras_distill` logger
    at INFO level when interactive logging is disabled).

    Args:
        message: The line to print.

    Example:
    >>> print_msg("keras-distill: temperature 2.0")
    keras-distill: temperature 2.0
    """
    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
    else:
        LOGGER.info(message)
