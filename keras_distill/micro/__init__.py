"""TFLite Micro export: int8 conversion, TFLM verification, arena, C++ sources, firmware."""

from keras_distill.micro.boards import BOARDS, Board, get_board
from keras_distill.micro.errors import MicroExportError
from keras_distill.micro.exporter import export
from keras_distill.micro.firmware import TARGETS, Firmware, FirmwareError, build
from keras_distill.micro.result import MicroExport
from keras_distill.micro.target_run import TargetRun, run_on_target

__all__ = [
    "BOARDS",
    "Board",
    "Firmware",
    "FirmwareError",
    "MicroExport",
    "MicroExportError",
    "TARGETS",
    "TargetRun",
    "build",
    "export",
    "get_board",
    "run_on_target",
]
